package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cryptinit/cryptinit/unlock/keys"
)

// checkNodeUUID checks --node-uuid at the door: it must be a UUID, and it
// is lower-cased, as the boot reads the SMBIOS UUID (dmidecode prints it in
// capitals). Only a UUID from META tag 15 is used as written, by the boot
// and by cryptctl alike; such a volume opens with --meta.
func checkNodeUUID(s string) (string, error) {
	if !isUUID(s) {
		return "", fmt.Errorf("--node-uuid: not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as in /sys/class/dmi/id/product_uuid)")
	}
	return strings.ToLower(s), nil
}

// namedUUIDSource is one place a node UUID can come from, named for
// messages.
type namedUUIDSource struct {
	name string
	src  keys.UUIDSource
}

// tracedUUID gives the node UUID from the first source that has one, as
// keys.MachineUUID does, and remembers which source that was, so that a
// nodeID key that does not open can say where its UUID came from.
type tracedUUID struct {
	sources []namedUUIDSource
	used    string // name of the source of the last UUID given
	uuid    string
}

// newTracedUUID is --node-uuid when given, else what the boot uses: META
// tag 15, sysfs product_uuid, the SMBIOS table.
func newTracedUUID(flag string, override []byte) *tracedUUID {
	if flag != "" {
		return &tracedUUID{sources: []namedUUIDSource{{"--node-uuid", keys.StaticUUID(flag)}}}
	}
	var s []namedUUIDSource
	if o := strings.TrimSpace(string(override)); o != "" {
		s = append(s, namedUUIDSource{"META tag 15", keys.StaticUUID(o)})
	}
	return &tracedUUID{sources: append(s,
		namedUUIDSource{"SMBIOS (" + keys.SysfsProductUUID + ")", keys.SysfsUUID{}},
		namedUUIDSource{"SMBIOS (" + keys.SMBIOSTable + ")", keys.SMBIOSUUID{}})}
}

// NodeUUID implements keys.UUIDSource.
func (t *tracedUUID) NodeUUID(ctx context.Context) (string, error) {
	var errs []string
	for _, s := range t.sources {
		id, err := s.src.NodeUUID(ctx)
		if err == nil && id != "" {
			t.used, t.uuid = s.name, id
			return id, nil
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.name, err))
		}
	}
	return "", fmt.Errorf("no node UUID (%s): give it with --node-uuid", strings.Join(errs, "; "))
}

// describe names the source of the UUID nodeID and kms keys used, or ""
// when no UUID was asked for. Neither the UUID (the nodeID passphrase, with
// the volume ID) nor any hash of it is shown: SMBIOS UUIDs often have little
// entropy, and even a short hash lets an attacker test guesses offline.
func (t *tracedUUID) describe() string {
	if t.used == "" {
		return ""
	}
	return fmt.Sprintf("nodeID and kms keys used the node UUID from %s; give the UUID the volume was made with as --node-uuid (any case: it is lower-cased, as the boot reads SMBIOS), or --meta META when it came from META tag 15, which is used as written", t.used)
}

// cmdSalt is the lockToSTATE salt for cryptctl: the salt file under
// --state-dir, with errors that say what to pass or create.
type cmdSalt struct{ dir string }

// Salt implements keys.SaltSource.
func (s cmdSalt) Salt(ctx context.Context) ([]byte, error) {
	if s.dir == "" {
		return nil, fmt.Errorf("needs STATE's salt: pass --state-dir DIR, the root of STATE's mounted filesystem (it holds %s)", keys.SaltFile)
	}
	salt, err := keys.SaltDir(s.dir).Salt(ctx)
	if errors.Is(err, keys.ErrNoSalt) {
		return nil, fmt.Errorf("%w: for a new STATE create one with cryptctl volume salt --state-dir %s (a volume locked to another STATE's salt never opens with a new one)", err, s.dir)
	}
	return salt, err
}

// newVolumeSaltCmd creates the lockToSTATE salt as the boot (and Talos)
// does the first time STATE is mounted.
func newVolumeSaltCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "salt --state-dir DIR",
		Short: "Create STATE's lockToSTATE salt (" + keys.SaltFile + ") as Talos does; an existing one is kept",
		Long: `Create the lockToSTATE salt at the root of STATE's filesystem, as Talos and the
boot do the first time STATE is mounted: ` + keys.SaltFile + `, mode 0600, one key
diskSalt holding 32 random bytes as a YAML sequence of decimal integers. An
existing salt is never replaced: every volume locked to it would be lost.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--state-dir is required: the root of STATE's mounted filesystem")
			}
			if st, err := os.Stat(dir); err != nil {
				return fmt.Errorf("--state-dir: %w", err)
			} else if !st.IsDir() {
				return fmt.Errorf("--state-dir %s is not a directory", dir)
			}
			created, err := keys.EnsureSalt(dir, nil)
			if err != nil {
				return fmt.Errorf("salt in %s: %w", dir, err)
			}
			path := dir + "/" + keys.SaltFile
			if created {
				fmt.Fprintf(cmd.OutOrStdout(), "created %s (%d random bytes, mode 0600)\n", path, keys.SaltSize)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s exists: kept (replacing it would lock out every lockToSTATE volume)\n", path)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "state-dir", "", "root of STATE's mounted filesystem")
	return cmd
}
