package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
)

// TestConcurrentUse: unlock may unseal several volumes at once while boot
// measures; one shared, serialized connection must keep every call intact.
func TestConcurrentUse(t *testing.T) {
	sim := Serialize(openSimulator(t))
	s, sealed := sealInInitrd(t, sim)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				got, err := s.Unseal(ctx, sealed)
				if err == nil && !bytes.Equal(got, secret32()) {
					err = errBadSecret
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // PCR 16 (debug) is bound by nothing here
		defer wg.Done()
		for i := 0; i < 20; i++ {
			d := sha256.Sum256([]byte{byte(i)})
			if err := ExtendPCR(sim, 16, d[:]); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

var errBadSecret = errors.New("unsealed the wrong secret")
