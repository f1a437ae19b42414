package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// document is one VolumeConfig/UserVolumeConfig as written in YAML.
type document struct {
	APIVersion   string      `yaml:"apiVersion"`
	Kind         string      `yaml:"kind"`
	Name         string      `yaml:"name"`
	Provisioning yaml.Node   `yaml:"provisioning"` // Talos's disk selection: only diskSelector.match is read (Volume.DiskSelector)
	Encryption   *Encryption `yaml:"encryption"`
	Filesystem   *filesystem `yaml:"filesystem"`
	MountPoint   string      `yaml:"mountPoint"`
}

// filesystem is Talos's UserVolumeConfig filesystem section.
type filesystem struct {
	Type string `yaml:"type"`
}

// ParseFile reads and parses the machine config at path.
func ParseFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read machine config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return cfg, fmt.Errorf("machine config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse parses a multi-document machine config and validates the volume
// documents in it. On validation errors it returns the parsed config too
// (for display) and an *Error listing every problem.
func Parse(data []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	cfg := &Config{}
	var problems []Problem
	for doc := 1; ; doc++ {
		var node yaml.Node
		err := dec.Decode(&node)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if n := tabLine(data); n > 0 && tabError(err, n) {
				return nil, fmt.Errorf("document %d: tabs are not allowed in YAML indentation (line %d): %w", doc, n, err)
			}
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		vols, probs, err := parseDocument(doc, &node)
		if err != nil {
			return nil, err
		}
		for _, p := range probs {
			switch {
			case p.note:
				cfg.Notes = append(cfg.Notes, p)
			case p.unknownKind:
				cfg.UnknownKinds = append(cfg.UnknownKinds, p)
				problems = append(problems, p)
			default:
				problems = append(problems, p)
			}
		}
		cfg.Volumes = append(cfg.Volumes, vols...)
	}
	problems = append(problems, validate(cfg)...)
	var errs []Problem
	for _, p := range problems {
		if p.Warning {
			cfg.Warnings = append(cfg.Warnings, p)
		} else {
			errs = append(errs, p)
		}
	}
	if len(errs) > 0 {
		return cfg, &Error{Problems: errs}
	}
	return cfg, nil
}

// parseDocument turns one YAML document into its volumes (none for a
// document that is not ours).
func parseDocument(doc int, node *yaml.Node) ([]Volume, []Problem, error) {
	if node.Kind == yaml.DocumentNode && len(node.Content) == 1 {
		node = node.Content[0]
	}
	if node.Kind != yaml.MappingNode {
		return nil, nil, nil // empty document or not a mapping: not ours
	}
	kind := scalarField(node, "kind")
	if kind == "" && lookup(node, "machine", "systemDiskEncryption") != nil {
		return parseSystemDiskEncryption(doc, node)
	}
	if kind != KindVolumeConfig && kind != KindUserVolumeConfig {
		return nil, []Problem{skipDocument(doc, node, kind)}, nil
	}
	vol, probs, err := parseVolumeDocument(doc, node, kind)
	if vol == nil || err != nil {
		return nil, probs, err
	}
	return []Volume{*vol}, probs, nil
}

// KindSystemDiskEncryption is the Kind of volumes configured the pre-1.10
// Talos way, in the v1alpha1 document's machine.systemDiskEncryption.
const KindSystemDiskEncryption = "v1alpha1 machine.systemDiskEncryption"

// parseSystemDiskEncryption reads machine.systemDiskEncryption.{state,
// ephemeral} of a Talos v1alpha1 document (older machine configs); the rest
// of that document is not cryptinit's and is not checked.
func parseSystemDiskEncryption(doc int, node *yaml.Node) ([]Volume, []Problem, error) {
	sde := lookup(node, "machine", "systemDiskEncryption")
	if sde.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("document %d: machine.systemDiskEncryption must be a mapping (line %d)", doc, sde.Line)
	}
	var vols []Volume
	var probs []Problem
	for i := 0; i+1 < len(sde.Content); i += 2 {
		key, val := sde.Content[i], sde.Content[i+1]
		path := "machine.systemDiskEncryption." + key.Value
		var id string
		switch key.Value {
		case "state":
			id = StateVolume
		case "ephemeral":
			id = EphemeralVolume
		default:
			probs = append(probs, Problem{Doc: doc, Volume: "machine.systemDiskEncryption", Line: key.Line,
				Msg: fmt.Sprintf("unknown field %q (want state or ephemeral)", path)})
			continue
		}
		probs = append(probs, unknownFields(doc, id, val, reflect.TypeOf(Encryption{}), path+".")...)
		var enc Encryption
		if err := val.Decode(&enc); err != nil {
			return nil, nil, fmt.Errorf("document %d (%s): %w", doc, path, err)
		}
		setKeyLines(val, &enc)
		vols = append(vols, Volume{ID: id, Kind: KindSystemDiskEncryption, Name: id, Doc: doc, Encryption: &enc, encPath: path})
	}
	return vols, probs, nil
}

// setKeyLines records where each key and its slot are written, for messages
// and the missing-slot check.
func setKeyLines(encNode *yaml.Node, enc *Encryption) {
	keys := lookup(encNode, "keys")
	if keys == nil {
		return
	}
	for i, k := range keys.Content {
		if i < len(enc.Keys) {
			enc.Keys[i].line = k.Line
			if lookup(k, "slot") != nil {
				enc.Keys[i].slotLine = line(k, "slot")
			}
		}
	}
}

// parseVolumeDocument parses a VolumeConfig or UserVolumeConfig document.
func parseVolumeDocument(doc int, node *yaml.Node, kind string) (*Volume, []Problem, error) {
	name := scalarField(node, "name")
	where := fmt.Sprintf("document %d (%s %s)", doc, kind, name)
	id := name // the volume ID, for messages
	if kind == KindUserVolumeConfig {
		id = "u-" + name
	}
	probs := unknownFields(doc, id, node, reflect.TypeOf(document{}), "")
	var d document
	if err := node.Decode(&d); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where, err)
	}
	vol := &Volume{Kind: kind, Name: d.Name, Doc: doc, Encryption: d.Encryption, MountPoint: d.MountPoint}
	if d.Filesystem != nil {
		vol.Filesystem = d.Filesystem.Type
	}
	if enc := lookup(node, "encryption"); enc != nil && vol.Encryption != nil {
		setKeyLines(enc, vol.Encryption)
	}
	switch kind {
	case KindVolumeConfig:
		if d.Name != StateVolume && d.Name != EphemeralVolume {
			msg := fmt.Sprintf("cryptinit handles the system volumes %s and %s only; this document is ignored", StateVolume, EphemeralVolume)
			for _, sys := range []string{StateVolume, EphemeralVolume} {
				if strings.EqualFold(d.Name, sys) {
					msg += fmt.Sprintf(" (did you mean %s?)", sys)
				}
			}
			probs = append(probs, Problem{Doc: doc, Volume: d.Name, Field: "name", Line: line(node, "name"), Warning: true, Msg: msg})
			return nil, probs, nil
		}
		vol.ID = d.Name
	case KindUserVolumeConfig:
		if d.Name == "" {
			probs = append(probs, Problem{Doc: doc, Field: "name", Line: node.Line,
				Msg: "a UserVolumeConfig needs a name", Fix: "add name: <volume name>; the partition label is u-<name>"})
		}
		vol.ID = "u-" + d.Name
		if strings.HasPrefix(d.Name, "u-") {
			probs = append(probs, Problem{Doc: doc, Volume: vol.ID, Field: "name", Line: line(node, "name"), Warning: true,
				Msg: fmt.Sprintf("the volume ID (and partition label) will be %s: the u- is added for you", vol.ID),
				Fix: fmt.Sprintf("write name: %s for the partition label %s", strings.TrimPrefix(d.Name, "u-"), d.Name)})
		}
		if m := lookup(node, "provisioning", "diskSelector", "match"); m != nil && m.Kind == yaml.ScalarNode {
			vol.DiskSelector = strings.TrimSpace(m.Value)
		}
	}
	return vol, probs, nil
}

// unknownFields reports every mapping key under node that has no field in t,
// with its line, walking nested structs, pointers and slices.
func unknownFields(doc int, volume string, node *yaml.Node, t reflect.Type, path string) []Problem {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(yaml.Node{}) {
		return nil // free-form subtree
	}
	var errs []Problem
	switch t.Kind() {
	case reflect.Struct:
		if node.Kind != yaml.MappingNode {
			return nil // the decoder reports type mismatches
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fields[name] = f.Type
		}
		for i := 0; i+1 < len(node.Content); i += 2 {
			key, val := node.Content[i], node.Content[i+1]
			ft, ok := fields[key.Value]
			if !ok {
				errs = append(errs, Problem{Doc: doc, Volume: volume, Line: key.Line,
					Msg: fmt.Sprintf("unknown field %q%s", path+key.Value, suggest(key.Value, fields))})
				continue
			}
			errs = append(errs, unknownFields(doc, volume, val, ft, path+key.Value+".")...)
		}
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return nil
		}
		for i, item := range node.Content {
			errs = append(errs, unknownFields(doc, volume, item, t.Elem(), fmt.Sprintf("%s[%d].", strings.TrimSuffix(path, "."), i))...)
		}
	}
	return errs
}

// suggest names a known field that differs from name only in case, the most
// common typo ("nodeId" for "nodeID"), or where a misplaced option belongs.
func suggest(name string, fields map[string]reflect.Type) string {
	if name == "reenrollOnPCRChange" {
		return " (only tpm keys take it: tpm: {reenrollOnPCRChange: true})"
	}
	for f := range fields {
		if f != "" && strings.EqualFold(f, name) {
			return fmt.Sprintf(" (did you mean %q?)", f)
		}
	}
	return ""
}

// scalarField returns the value of a scalar key in a mapping node.
func scalarField(m *yaml.Node, key string) string {
	if v := lookup(m, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}
	return ""
}

// line returns the line of key in mapping m, or m's own line.
func line(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i].Line
		}
	}
	return m.Line
}

// lookup follows a path of mapping keys.
func lookup(m *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if m == nil || m.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				next = m.Content[i+1]
			}
		}
		m = next
	}
	return m
}

// talosKinds are the Talos machine config document kinds that carry no
// volume for cryptinit (see Talos's config reference).
var talosKinds = []string{
	"RawVolumeConfig", "ExistingVolumeConfig", "SwapVolumeConfig", "ZswapConfig",
	"NetworkDefaultActionConfig", "NetworkRuleConfig", "KmsgLogConfig", "EventSinkConfig",
	"WatchdogTimerConfig", "SideroLinkConfig", "TrustedRootsConfig", "EthernetConfig",
	"ExtensionServiceConfig", "HostnameConfig",
}

// skipDocument describes a document cryptinit does not read: a note for a
// Talos kind (or a v1alpha1 document without systemDiskEncryption), an
// unknown-kind warning otherwise.
func skipDocument(doc int, node *yaml.Node, kind string) Problem {
	p := Problem{Doc: doc, Volume: kind, Field: "kind", Line: line(node, "kind")}
	switch {
	case kind == "" && (scalarField(node, "version") == "v1alpha1" || lookup(node, "machine") != nil):
		p.Volume, p.Field, p.note = "v1alpha1", "", true
		p.Msg = "Talos machine config without machine.systemDiskEncryption: no volume for cryptinit, skipped"
	case slices.Contains(talosKinds, kind):
		p.note = true
		p.Msg = fmt.Sprintf("Talos %s: no volume for cryptinit, skipped", kind)
	case kind == "":
		p.unknownKind, p.Warning = true, true
		p.Msg = "the document has no kind: skipped"
		p.Fix = "set kind: VolumeConfig or kind: UserVolumeConfig"
	default:
		p.unknownKind, p.Warning = true, true
		p.Msg = fmt.Sprintf("unknown kind %q: skipped", kind)
		for _, k := range append([]string{KindVolumeConfig, KindUserVolumeConfig}, talosKinds...) {
			if strings.EqualFold(k, kind) || editDistance(strings.ToLower(k), strings.ToLower(kind)) <= 2 {
				p.Msg += fmt.Sprintf(" (did you mean %s?)", k)
				break
			}
		}
	}
	return p
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// tabLine is the first line (1-based) indented with a tab, 0 if none: YAML
// forbids tabs in indentation and yaml.v3 says only "found character that
// cannot start any token".
func tabLine(data []byte) int {
	for i, l := range strings.Split(string(data), "\n") {
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if strings.Contains(indent, "\t") {
			return i + 1
		}
	}
	return 0
}

// tabError tells whether yaml.v3's err is about the tab on line n (it
// names the line, or a tab character), not some other fault in a file that
// also holds a tab, e.g. inside a quoted string.
func tabError(err error, n int) bool {
	msg := err.Error()
	return strings.Contains(msg, fmt.Sprintf("line %d:", n)) || strings.Contains(msg, "tab character")
}
