package meta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The wipe request (TagWipeRequest, 0xC1) is the seed's "wipe this partition
// before the next boot encrypts it" for migrating a volume from unencrypted
// to encrypted: cryptctl sets it, the next boot consumes it. Its value is a
// versioned JSON record:
//
//	{"version":1,"requests":[{"volume":"EPHEMERAL","partUUID":"…","luksUUID":"…"}]}
//
// Each request names the volume and the partition it targets, by GPT
// partition GUID (PARTUUID), by the UUID of the LUKS2 header on it, or both.
// A volume ID alone is never enough: labels are not unique (a second disk,
// a restored image), GUIDs and LUKS UUIDs are.
//
// A request that does not match the partition the boot found for its volume
// is ignored with a warning and LEFT in META: the boot writes META only to
// act on a request, never to discard one the operator made. The request
// still targets exactly the partition the operator named by a unique ID, so
// it can only ever wipe that partition (say, once the right disk is attached
// again); the warning repeats every boot until the operator cancels it with
// `cryptctl meta cancel-wipe`.

// WipeRequestVersion is the version of the TagWipeRequest record this code
// reads and writes; a record of another version is never acted on.
const WipeRequestVersion = 1

// WipeRequest asks the next boot to wipe one volume's partition.
type WipeRequest struct {
	Volume   string `json:"volume"`             // STATE, EPHEMERAL, u-<name>
	PartUUID string `json:"partUUID,omitempty"` // GPT partition GUID, lower case
	LUKSUUID string `json:"luksUUID,omitempty"` // UUID of the LUKS header on it, lower case
}

// Target describes what r targets, for messages.
func (r WipeRequest) Target() string {
	var s []string
	if r.PartUUID != "" {
		s = append(s, "PARTUUID="+r.PartUUID)
	}
	if r.LUKSUUID != "" {
		s = append(s, "LUKS UUID="+r.LUKSUUID)
	}
	return strings.Join(s, ", ")
}

// Partition is what the boot found for a volume: the partition GUID from
// its disk's GPT and the UUID of the LUKS header on it ("" when there is
// none or it could not be read).
type Partition struct {
	PartUUID string
	LUKSUUID string
}

func (p Partition) String() string {
	return fmt.Sprintf("PARTUUID=%s, LUKS UUID=%s", orNone(p.PartUUID), orNone(p.LUKSUUID))
}

func orNone(s string) string {
	if s == "" {
		return "(none found)"
	}
	return s
}

// Matches reports whether r targets p: every identifier r names equals
// p's (an identifier p lacks never matches). A request naming none matches
// nothing.
func (r WipeRequest) Matches(p Partition) bool {
	if r.PartUUID == "" && r.LUKSUUID == "" {
		return false
	}
	if r.PartUUID != "" && !sameID(r.PartUUID, p.PartUUID) {
		return false
	}
	if r.LUKSUUID != "" && !sameID(r.LUKSUUID, p.LUKSUUID) {
		return false
	}
	return true
}

func sameID(a, b string) bool {
	return a != "" && normID(a) == normID(b)
}

func normID(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// IsVolumeID reports whether id names a volume cryptinit handles: STATE,
// EPHEMERAL or u-<name>.
func IsVolumeID(id string) bool {
	return id == "STATE" || id == "EPHEMERAL" || (strings.HasPrefix(id, "u-") && len(id) > 2 && !strings.ContainsAny(id, " \t\r\n"))
}

// SuggestVolumeID returns the volume ID an operator probably meant by s
// when s is not one: STATE or EPHEMERAL in another case ("ephemeral"), a
// user volume in another case of its prefix ("U-data"). It returns "" when
// it has no guess.
func SuggestVolumeID(s string) string {
	if IsVolumeID(s) {
		return ""
	}
	s = strings.TrimSpace(s) // " u-data" means u-data, not u--data
	switch u := strings.ToUpper(s); {
	case u == "STATE" || u == "EPHEMERAL":
		return u
	case strings.HasPrefix(u, "U-") && IsVolumeID("u-"+s[2:]):
		return "u-" + s[2:]
	}
	return ""
}

// Validate checks that r names a volume and at least one identifier.
func (r WipeRequest) Validate() error {
	if !IsVolumeID(r.Volume) {
		hint := ""
		if g := SuggestVolumeID(r.Volume); g != "" {
			hint = "; did you mean " + g + "?"
		}
		return fmt.Errorf("wipe request: %q is not a volume ID (STATE, EPHEMERAL, u-<name>)%s", r.Volume, hint)
	}
	if r.PartUUID == "" && r.LUKSUUID == "" {
		return fmt.Errorf("wipe request for %s names no target: give its partition GUID (PARTUUID) or its LUKS UUID", r.Volume)
	}
	return nil
}

type wipeRecord struct {
	Version  int           `json:"version"`
	Requests []WipeRequest `json:"requests"`
}

// WipeRequests decodes TagWipeRequest: nil when it is unset, an error when
// it is not a record this version understands (then nothing may act on it).
func WipeRequests(m *Meta) ([]WipeRequest, error) {
	v, ok := m.Get(TagWipeRequest)
	if !ok {
		return nil, nil
	}
	var rec wipeRecord
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return nil, fmt.Errorf("META tag %#x (wipe request) does not parse: %w", TagWipeRequest, err)
	}
	if rec.Version != WipeRequestVersion {
		return nil, fmt.Errorf("META tag %#x (wipe request) is version %d, this cryptinit reads version %d", TagWipeRequest, rec.Version, WipeRequestVersion)
	}
	for _, r := range rec.Requests {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("META tag %#x: %w", TagWipeRequest, err)
		}
	}
	return rec.Requests, nil
}

// setWipeRequests stores reqs, deleting the tag when there are none.
func setWipeRequests(m *Meta, reqs []WipeRequest) error {
	if len(reqs) == 0 {
		m.Delete(TagWipeRequest)
		return nil
	}
	v, err := json.Marshal(wipeRecord{Version: WipeRequestVersion, Requests: reqs})
	if err != nil {
		return err
	}
	m.Set(TagWipeRequest, v)
	return nil
}

// RequestWipe adds r to the wipe request, replacing an earlier request for
// the same volume.
func RequestWipe(m *Meta, r WipeRequest) error {
	r.PartUUID, r.LUKSUUID = normID(r.PartUUID), normID(r.LUKSUUID)
	if err := r.Validate(); err != nil {
		return err
	}
	reqs, err := WipeRequests(m)
	if err != nil {
		return fmt.Errorf("%w (delete it with cryptctl meta delete --tag %d first)", err, TagWipeRequest)
	}
	reqs = slices.DeleteFunc(reqs, func(o WipeRequest) bool { return o.Volume == r.Volume })
	return setWipeRequests(m, append(reqs, r))
}

// CancelWipe removes the request for volumeID and reports whether there
// was one.
func CancelWipe(m *Meta, volumeID string) (bool, error) {
	reqs, err := WipeRequests(m)
	if err != nil {
		return false, err
	}
	n := len(reqs)
	reqs = slices.DeleteFunc(reqs, func(o WipeRequest) bool { return o.Volume == volumeID })
	if len(reqs) == n {
		return false, nil
	}
	return true, setWipeRequests(m, reqs)
}

// WipeMismatchError says a wipe request does not target the partition the
// boot found for its volume; the request was not acted on and stays.
type WipeMismatchError struct {
	Request WipeRequest
	Found   Partition
}

func (e *WipeMismatchError) Error() string {
	return fmt.Sprintf("META asks to wipe %s at %s, but the partition found for %s has %s: not wiped; the request stays in META (cancel it with `cryptctl meta cancel-wipe --volume %s META-DEVICE`)",
		e.Request.Volume, e.Request.Target(), e.Request.Volume, e.Found, e.Request.Volume)
}

// ConsumeWipeRequest is for the boot. It writes META only when META holds a
// readable request for volumeID that matches found: then it removes that
// request and writes META back BEFORE returning it; only then may the
// caller wipe. Clearing first means a crash between the two steps loses the
// request (the operator asks again) instead of wiping twice, which would
// destroy the volume freshly encrypted after the first wipe. It returns
// nil and no error when there is no request for volumeID (or META is
// blank), and a *WipeMismatchError (META untouched) when the request
// targets another partition.
func ConsumeWipeRequest(dev ReadWriterAt, volumeID string, found Partition) (*WipeRequest, error) {
	m, err := Read(dev)
	if errors.Is(err, ErrBlank) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read META for wipe request: %w", err)
	}
	reqs, err := WipeRequests(m)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(reqs, func(r WipeRequest) bool { return r.Volume == volumeID })
	if i < 0 {
		return nil, nil
	}
	r := reqs[i]
	if !r.Matches(found) {
		return nil, &WipeMismatchError{Request: r, Found: found}
	}
	if err := setWipeRequests(m, slices.Delete(reqs, i, i+1)); err != nil {
		return nil, err
	}
	if err := m.Write(dev); err != nil {
		return nil, fmt.Errorf("clear wipe request for %s in META (volume not wiped): %w", volumeID, err)
	}
	return &r, nil
}

// LegacyWarnings returns one warning for each of tags 12 and 13 that holds
// what cryptinit kept there before its records moved to TagWipeRequest and
// TagFormatJournal: lines that are all volume IDs. Those tags belong to
// Talos's users, so such a value may as well be a user's own: it is never
// acted on, written, deleted or altered, only reported.
func LegacyWarnings(m *Meta) []string {
	var out []string
	if ids, ok := legacyIDs(m, TagLegacyWipeRequest); ok {
		out = append(out, fmt.Sprintf("META tag %d holds %q, the shape of a wipe request from cryptinit before it moved to tag %#x: ignored since this version, nothing is wiped. If it was cryptinit's, ask again with `cryptctl meta request-wipe --volume ID --partuuid GUID|--luks-uuid UUID META-DEVICE` and delete the old one with `cryptctl meta delete --tag %d META-DEVICE`; if it is your own data, leave it",
			TagLegacyWipeRequest, strings.Join(ids, ","), TagWipeRequest, TagLegacyWipeRequest))
	}
	if ids, ok := legacyIDs(m, TagLegacyFormatPending); ok {
		out = append(out, fmt.Sprintf("META tag %d holds %q, the shape of cryptinit's format journal before it moved to tag %#x: ignored since this version, no format is redone because of it. If it was cryptinit's, delete it with `cryptctl meta delete --tag %d META-DEVICE`; if it is your own data, leave it",
			TagLegacyFormatPending, strings.Join(ids, ","), TagFormatJournal, TagLegacyFormatPending))
	}
	return out
}

// legacyIDs reports whether tag holds one or more lines, each a volume ID.
func legacyIDs(m *Meta, tag uint32) ([]string, bool) {
	v, ok := m.Get(tag)
	if !ok {
		return nil, false
	}
	var ids []string
	for _, l := range strings.Split(string(v), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if !IsVolumeID(l) {
			return nil, false
		}
		ids = append(ids, l)
	}
	return ids, len(ids) > 0
}
