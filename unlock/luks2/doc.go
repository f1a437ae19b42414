// Package luks2 reads, unlocks, formats and re-keys LUKS2 volumes in pure Go,
// so that cryptinit can work inside an initramfs that has no cryptsetup.
//
// Every header this package writes is meant to be accepted by cryptsetup 2.6
// as if cryptsetup had written it: the layout follows cryptsetup's defaults
// (16 KiB metadata copies at 0 and 16 KiB, keyslot areas from 32 KiB up to the
// data segment at 16 MiB, 4000 anti-forensic stripes, areas aligned to 4 KiB and
// placed in the first gap that fits), and the tests cross-check it against the
// real cryptsetup binary in both directions.
//
// # Why not github.com/anatol/luks.go
//
// luks.go (pinned in go.mod) can only read and unlock, does not fall back to
// the secondary header when the primary is damaged, and keeps its parsed
// metadata private, so every write path (format, add and kill keyslots,
// tokens, flags) would need a second parser anyway. One parser used for both
// reading and writing is what lets us refuse to rewrite a header that holds
// metadata we do not understand (see [ErrUnknownMetadata]), so this package
// does not use luks.go; its test suite still reads our headers with it as a
// third, independent reader.
//
// # Write order and crash safety
//
// A LUKS2 device carries two copies of the metadata (binary header + JSON
// area). Readers use the valid copy (checksum and JSON both good) with the
// highest sequence id. Every change here writes a complete new metadata with
// seqid+1 to both copies, in this order, so that a crash between any two
// writes leaves a device that opens with every key valid before the change, or
// with every key valid after it:
//
//  1. new key material (Format, AddKeyslot, ReplaceKeyslot) goes into a
//     keyslot area that no header references yet; Sync.
//  2. the secondary copy is written: its JSON area, Sync, then its binary
//     header, Sync. From here on readers pick the new metadata (higher
//     seqid) even if step 3 never happens.
//  3. the primary copy is written the same way: JSON area, Sync, binary
//     header, Sync.
//  4. only now is key material that the new metadata no longer references
//     overwritten with random bytes (KillKeyslot, ReplaceKeyslot); Sync.
//
// The new metadata is encoded and validated before step 1, so a change that
// does not fit the JSON area or would not validate writes nothing at all.
//
// A torn copy fails its checksum, so the other copy is used. Writing the JSON
// area before the binary header, whose fields all sit in its first 512-byte
// sector (written atomically by disks), means a crash never leaves a LUKS
// signature in front of a half-written copy; so an interrupted Format leaves
// either no LUKS signature at all or a complete volume that opens (through
// its secondary copy if the primary was not written yet). The tests prove all
// of this by failing the Nth WriteAt or Sync for every N, cleanly and with a
// torn write.
//
// # Secrets
//
// Passphrases, volume keys and every derived key are []byte and are zeroed by
// this package as soon as it no longer needs its own copies; callers own (and
// should zero) the keys returned to them. Nothing secret is logged or put in an
// error message. What Go does not let us reach stays until the garbage
// collector reuses it: AES key schedules inside crypto/aes and hash states
// inside golang.org/x/crypto. argon2's work memory is a mapping of its own,
// unmapped as soon as the key is derived.
package luks2
