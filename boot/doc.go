// Package boot is cryptinit's PID 1 sequence: from the first mount to
// switch_root. Each step lives in its own package under boot/ (cmdline,
// console, timeline, modules, devices, dmcrypt, mkfs, mounts); this package
// orders them, decides precedence and concurrency, and turns any failure
// into one banner.
//
// # Sequence
//
//  1. mount /proc, /sys, /dev (devtmpfs), /run; securityfs; extend PCR 11
//     with enter-initrd (skipped without a TPM)
//  2. load the disk drivers shipped in /lib/modules/$(uname -r) (honouring
//     modules.softdep and modules.alias); device-mapper and crypto
//     modules load in the background (then efivarfs is mounted), and after
//     them the filesystems the plan names (the volumes' and rootfstype=),
//     by the kernel's fs-<type> alias: dm-setup waits for the first, a
//     mount for its own type's, loading it then if nothing named it; a
//     filesystem nobody mounts is never loaded; network drivers load only
//     when a kms key brings the network up (see modules.go and
//     boot/modules.StageOf)
//  3. read the machine config (see precedence below)
//  4. wait for the partitions by GPT label (STATE, every configured volume,
//     the root's PARTLABEL) up to cryptinit.wait=
//  5. META: consume staged wipe requests, pick STATE's encryption config
//     (machine config beats META tag 9, and META is updated to match), and
//     take the node UUID override (tag 15)
//  6. STATE: open or format it (console prompt as a last resort), map it
//     at /dev/mapper/luks2-STATE, make its filesystem when fresh, mount it;
//     create the lockToSTATE salt
//  7. EPHEMERAL and user volumes, concurrently, never using more argon2
//     memory at once than MemAvailable; networking comes up first when a
//     volume has a kms key. On a machine with two or more CPUs, the ones
//     that need nothing from STATE (config from the image or the command
//     line, no lockToSTATE key) start at step 6, alongside STATE
//  8. mount root= at /sysroot, move the volumes to their mount points in
//     it, latch PCR 15, extend PCR 11 with leave-initrd, write the timeline
//     to /run/cryptinit/timeline.json and switch_root to init=
//
// Any failure prints a banner (which volume, each key slot tried and why it
// failed, what to do) and reboots after cryptinit.reboot-delay=, or starts
// a shell with cryptinit.debug=shell. There is no silent hang: every wait
// has a timeout.
//
// # Machine config precedence
//
//  1. the file named by cryptinit.config=: /path inside the initramfs, or
//     DEVICE:/path with DEVICE = PARTLABEL=<label> or /dev/<name>, mounted
//     read-only (e.g. cryptinit.config=PARTLABEL=ESP:/cryptinit/config.yaml;
//     a vfat ESP needs the vfat and nls modules in the image). A source that
//     cannot be read is logged and skipped; one that does not parse stops
//     the boot.
//  2. the config embedded in the image at /etc/cryptinit/config.yaml.
//  3. only when neither exists: the copy kept on STATE
//     (cryptinit/config.yaml, else Talos's config.yaml), read once STATE is
//     open; it then serves every other volume.
//
// Whenever 1 or 2 is used, cryptinit/config.yaml on STATE is refreshed.
// STATE's own encryption config comes from the machine config when it
// encrypts STATE, else from META tag 9 (the seed's rule: the machine config
// beats META). Volumes a config does not describe are used as plain
// filesystems (formatted xfs when empty); a LUKS volume without config stops
// the boot.
//
// # Key sources
//
// The node UUID is META tag 15 when set, else the SMBIOS UUID. The TPM is
// /dev/tpmrm0 (or /dev/tpm0), the PCR policy comes from systemd-stub's
// /.extra files. kms keys use the KMS client with the optional files
// /etc/cryptinit/kms-ca.pem, kms-client.pem and kms-client-key.pem from the
// image, after bringing up the network from ip= (DHCP when absent). When no
// configured key opens a volume and the console is a terminal, the person at
// the console may type a passphrase or recovery key (3 tries, each within
// cryptinit.prompt-timeout=); the configured keys are then synced to the
// volume (re-enrolled) as after any open, never touching the typed slot.
//
// # Default mount points (inside the new root, as Talos)
//
// STATE /system/state, EPHEMERAL /var, u-<name> /var/mnt/<name>; a volume's
// mountPoint in the config overrides them.
//
// # Console lines
//
// See package boot/console for the line formats and boot/timeline for the
// "cryptinit: timeline {json}" lines.
package boot
