package boot

import (
	"testing"
	"time"

	"github.com/cryptinit/cryptinit/boot/console"
	"github.com/cryptinit/cryptinit/unlock/keys"
)

// pinPrompt is a console that can also ask for a TPM PIN.
type pinPrompt struct {
	fakePrompt
	pins []string // volume try/tries asked
}

func (p *pinPrompt) TPMPIN(volume string, try, tries int) ([]byte, error) {
	p.pins = append(p.pins, volume)
	return []byte("1234"), nil
}

// TestTPMPINFromConsole: a console that can ask for a TPM PIN is the key
// environment's PIN source (systemd-tpm2 tokens with tpm2-pin), unless the
// prompt is turned off.
func TestTPMPINFromConsole(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prompt  Prompter
		timeout time.Duration
		want    bool
	}{
		{"console asks", &pinPrompt{}, time.Minute, true},
		{"prompt-timeout=0", &pinPrompt{}, 0, false},
		{"console without PINs", &fakePrompt{}, time.Minute, false},
		{"no console", nil, time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got keys.Env
			b := &Boot{Root: t.TempDir(), Prompt: tc.prompt,
				NewUnlocker: func(env keys.Env, _ *console.Logger) Unlocker { got = env; return nil }}
			b.Cmdline.PromptTimeout = tc.timeout
			b.unlocker(&plan{}, nil)
			if (got.PIN != nil) != tc.want {
				t.Fatalf("PIN source %v, want one: %v", got.PIN, tc.want)
			}
			if !tc.want {
				return
			}
			pin, err := got.PIN.TPMPIN("STATE", 1, keys.PINTries)
			if err != nil || string(pin) != "1234" {
				t.Fatalf("PIN %q, %v", pin, err)
			}
			if p := tc.prompt.(*pinPrompt); len(p.pins) != 1 || p.pins[0] != "STATE" {
				t.Fatalf("console asked %v", p.pins)
			}
		})
	}
}
