package keys

import (
	"context"
	"fmt"
)

// NodeID derives the passphrase from the node UUID: exactly the UUID string
// followed by the volume ID ("<uuid>EPHEMERAL"), no hash, as Talos does, so
// volumes Talos made open unchanged.
type NodeID struct {
	UUID UUIDSource
}

// Kind implements Key.
func (*NodeID) Kind() string { return "nodeID" }

// Passphrase implements Key.
func (k *NodeID) Passphrase(ctx context.Context, s Slot) ([]byte, error) {
	if k.UUID == nil {
		return nil, fmt.Errorf("%w: no node UUID source", ErrKeyUnavailable)
	}
	id, err := k.UUID.NodeUUID(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: node UUID: %w", ErrKeyUnavailable, err)
	}
	if err := CheckEntropy(id); err != nil {
		return nil, err
	}
	return []byte(id + s.VolumeID), nil
}

// Enroll implements Key: nodeID keys have no token.
func (k *NodeID) Enroll(ctx context.Context, s Slot) (*Enrollment, error) {
	p, err := k.Passphrase(ctx, s)
	if err != nil {
		return nil, err
	}
	return &Enrollment{Passphrase: p}, nil
}

// CheckEntropy rejects a node UUID that is empty or in which one character
// (hyphens included) makes up more than half, like all-zero or all-F UUIDs
// that firmware ships when it has none.
func CheckEntropy(uuid string) error {
	if uuid == "" {
		return fmt.Errorf("%w: the UUID is empty", ErrLowEntropy)
	}
	counts := map[rune]int{}
	for _, c := range uuid {
		counts[c]++
		if counts[c] > len(uuid)/2 {
			// the UUID itself is not printed: it is the nodeID passphrase
			return fmt.Errorf("%w: %q makes up more than half of it; set a real UUID in the firmware or META tag 15",
				ErrLowEntropy, string(c))
		}
	}
	return nil
}
