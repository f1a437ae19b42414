package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the Examples sections of help and man pages, by command
// path. They live here, one table, so that a look at them shows the one
// spelling (device first, --key-slot/-S); a command may also set its own
// Example, which wins. TestEveryCommandHasExamples parses every line that
// starts with "cryptctl" against the command it names.
var examples = map[string]string{
	"cryptctl": `  # what a volume on an image file looks like, and whether a key opens it
  cryptctl luks dump disk.img
  cryptctl luks test-key disk.img --key-file pass.txt`,

	"cryptctl luks": `  cryptctl luks format disk.img --key-file pass.txt
  cryptctl luks dump disk.img`,
	"cryptctl luks format": `  # argon2id with cryptinit's default costs, key slot 0
  cryptctl luks format disk.img --key-file pass.txt
  # what cryptsetup would write, spelled as cryptsetup spells it
  cryptctl luks format /dev/sdb3 --type luks2 --cipher aes-xts-plain64 --key-file pass.txt -S 1 --label EPHEMERAL
  # cheap KDF for a test image (never for a real disk)
  cryptctl luks format disk.img --key-file pass.txt --pbkdf pbkdf2 --pbkdf-force-iterations 1000`,
	"cryptctl luks dump": `  cryptctl luks dump disk.img
  cryptctl luks dump --json /dev/sdb3`,
	"cryptctl luks add-key": `  # a new passphrase in the first free slot, authorised by an old one
  cryptctl luks add-key disk.img --key-file old.txt --new-key-file new.txt
  # typed on the terminal (asked twice), into slot 5
  cryptctl luks add-key disk.img --key-file old.txt --new-key-file - -S 5`,
	"cryptctl luks change-key": `  cryptctl luks change-key disk.img --key-file old.txt --new-key-file new.txt
  cryptctl luks change-key disk.img --key-file old.txt --new-key-file new.txt --key-slot 2`,
	"cryptctl luks remove-key": `  # remove slot 0, proving new.txt still opens another slot
  cryptctl luks remove-key disk.img -S 0 --key-file new.txt`,
	"cryptctl luks test-key": `  cryptctl luks test-key disk.img --key-file pass.txt
  cryptctl luks test-key disk.img --key-file pass.txt -S 1 && echo slot 1 opens`,
	"cryptctl luks token": `  cryptctl luks token export disk.img --token-id 0`,
	"cryptctl luks token import": `  cryptctl luks token import disk.img --json-file token.json
  cryptctl luks token import disk.img --token-id 0 --replace --json-file token.json`,
	"cryptctl luks token export": `  cryptctl luks token export disk.img --token-id 0`,
	"cryptctl luks token remove": `  cryptctl luks token remove disk.img --token-id 0`,
	"cryptctl luks flags": `  cryptctl luks flags disk.img --set allow-discards
  cryptctl luks flags disk.img --clear`,

	"cryptctl config":          `  cryptctl config validate machine.yaml`,
	"cryptctl config validate": `  cryptctl config validate machine.yaml`,

	"cryptctl meta": `  cryptctl meta list meta.img
  cryptctl meta get --tag 9 /dev/sda4`,
	"cryptctl meta list": `  cryptctl meta list /dev/disk/by-partlabel/META`,
	"cryptctl meta get":  `  cryptctl meta get --tag 9 meta.img`,
	"cryptctl meta set": `  cryptctl meta set --tag 9 --file state-encryption.json meta.img
  # a new META image: a blank file is written only with --init
  truncate -s 1M meta.img
  cryptctl meta set --init --tag 15 --value 5d1c6a0e-3b7f-4c2a-9e8d-7f6a5b4c3d2e meta.img`,
	"cryptctl meta delete": `  cryptctl meta delete --tag 15 meta.img`,
	"cryptctl meta request-wipe": `  # the partition labelled EPHEMERAL on the disk holding META
  cryptctl meta request-wipe --volume EPHEMERAL /dev/sda4
  # on images: read the PARTUUID from the whole-disk image
  cryptctl meta request-wipe --volume EPHEMERAL --disk disk.img meta.img`,
	"cryptctl meta cancel-wipe": `  cryptctl meta cancel-wipe --volume EPHEMERAL meta.img`,

	"cryptctl volume": `  cryptctl volume open ephemeral.img --config machine.yaml --volume EPHEMERAL`,
	"cryptctl volume open": `  cryptctl volume open ephemeral.img --config machine.yaml --volume EPHEMERAL
  # STATE with its config from META tag 9
  cryptctl volume open state.img --meta meta.img --volume STATE -v`,
	"cryptctl volume format": `  cryptctl volume format ephemeral.img --config machine.yaml --volume EPHEMERAL`,
	"cryptctl volume sync":   `  cryptctl volume sync /dev/sda6 --config machine.yaml --volume u-data --node-uuid 5d1c6a0e-3b7f-4c2a-9e8d-7f6a5b4c3d2e`,
	"cryptctl volume salt":   `  cryptctl volume salt --state-dir /mnt/state`,
	"cryptctl volume unlock": `  cryptctl volume unlock state.img --config machine.yaml --volume STATE --meta meta.img --state-dir /mnt/state`,

	"cryptctl pcr":         `  cryptctl pcr predict --uki uki.efi`,
	"cryptctl pcr genkey":  `  cryptctl pcr genkey --out pcr-key.pem --pub pcr-pub.pem`,
	"cryptctl pcr predict": `  cryptctl pcr predict --uki uki.efi --events`,
	"cryptctl pcr sign":    `  cryptctl pcr sign --uki uki.efi --key pcr-key.pem --out uki-signed.efi`,

	// image and luks test-token come from other branches of issues 11-13
	"cryptctl image": `  cryptctl image build -o initramfs.img --host --config machine.yaml`,
	"cryptctl image build": `  # an initramfs with this machine's drivers and its machine config
  cryptctl image build -o initramfs.img --host --config machine.yaml
  # a Secure Boot signed UKI whose TPM keys unseal only under it
  cryptctl image build -o cryptinit.efi --uki --universal --config machine.yaml --pcr-key pcr-key.pem --sb-key db.key --sb-cert db.crt
  # with the KMS client files kms-server --generate-tls wrote
  cryptctl image build -o initramfs.img --host --config machine.yaml --kms-ca pki/ca.pem --kms-cert pki/client-NODE.pem --kms-key pki/client-NODE-key.pem`,
	"cryptctl image host-devices": `  cryptctl image host-devices`,
	"cryptctl luks test-token": `  cryptctl luks test-token /dev/sda5
  cryptctl luks test-token state.img --tpm swtpm:host=127.0.0.1,port=2321 --uki cryptinit.efi --token-id 0`,

	"cryptctl version": `  cryptctl version`,
	"cryptctl man":     `  cryptctl man /usr/local/share/man/man1`,

	"cryptctl completion":            `  cryptctl completion bash > /etc/bash_completion.d/cryptctl`,
	"cryptctl completion bash":       `  cryptctl completion bash > /etc/bash_completion.d/cryptctl`,
	"cryptctl completion zsh":        `  cryptctl completion zsh > "${fpath[1]}/_cryptctl"`,
	"cryptctl completion fish":       `  cryptctl completion fish > ~/.config/fish/completions/cryptctl.fish`,
	"cryptctl completion powershell": `  cryptctl completion powershell | Out-String | Invoke-Expression`,
}

// addExamples gives every command under root that has none its entry in
// examples. cobra's own completion command is added first, so that it and
// its subcommands get theirs.
func addExamples(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	walkCommands(root, func(c *cobra.Command) {
		if c.Example == "" {
			c.Example = strings.TrimRight(examples[c.CommandPath()], "\n")
		}
	})
}

// walkCommands calls fn for c and every command below it.
func walkCommands(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, s := range c.Commands() {
		walkCommands(s, fn)
	}
}
