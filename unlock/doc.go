// Engine API: res, err := (&unlock.Engine{Env: keys.Env{NodeUUID: keys.MachineUUID(metaTag15), KMS: kmsClient, TPM: sealer, SecureBoot: tpm.EFIVars{}}, StateDir: stateRoot}).Unlock(ctx, vol, dev, size); then map res.VolumeKey with res.Mapping (+res.Options), mkfs if res.Formatted, log res.Sync, res.Zero().

// Package unlock is cryptinit's unlock engine: given a volume's config, its
// partition and the machine's key sources, it opens the LUKS2 volume (or
// formats it when the partition is empty) and keeps its keyslots in line
// with the config.
//
// Boot order: meta.ReadStateConfig picks STATE's config (machine config
// wins, META tag 9 kept in step); ConsumeWipeRequest before Unlock for a
// volume META asks to wipe; Unlock STATE without StateDir, mount it,
// keys.EnsureSalt(stateRoot, nil), then Unlock EPHEMERAL and user volumes
// with StateDir set (lockToSTATE keys need the salt).
//
// Open tries the configured keys in slot order, each on its own slot and
// with its own timeout, and records every failure: when none opens, the
// error lists each slot, its kind and why. Format runs only when the
// partition has no LUKS header and probe finds it empty; the first key that
// can be created formats, the others are added by the sync. Whether Unlock
// opens, formats, redoes an interrupted format or refuses is decided in one
// pure function over what it observed (decide.go), never on a key that is
// unavailable, wrong or slow. Sync (after
// every open) adds missing keys, replaces configured slots whose key no
// longer opens them, and removes slots the config does not name (except
// recovery slots); it never touches the slot that opened the volume, so a
// crash at any point leaves that configured key working. Sync problems are
// reported in the result, never fatal. A clean sync leaves a fingerprint
// token (HMAC under the volume key) so that boots where nothing changed
// skip the per-key KDF checks (see syncstate.go).
package unlock
