// Package config parses the machine-config documents that describe encrypted
// volumes: Talos's VolumeConfig (STATE, EPHEMERAL) and UserVolumeConfig
// (u-<name>), plus cryptinit's additions (KDF costs, recovery keys,
// filesystem type, mount point).
//
// A machine config is a multi-document YAML stream. Documents of other kinds
// are skipped, except that the main v1alpha1 document's
// machine.systemDiskEncryption (how Talos configured STATE and EPHEMERAL
// before VolumeConfig) is read too. Unknown fields inside what we read are
// errors naming the field and its line, so a typo never silently disables a
// key.
package config
