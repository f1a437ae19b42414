package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
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
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		vols, probs, err := parseDocument(doc, &node)
		if err != nil {
			return nil, err
		}
		problems = append(problems, probs...)
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
		vols, err := parseSystemDiskEncryption(doc, node)
		return vols, nil, err
	}
	if kind != KindVolumeConfig && kind != KindUserVolumeConfig {
		return nil, nil, nil
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
func parseSystemDiskEncryption(doc int, node *yaml.Node) ([]Volume, error) {
	sde := lookup(node, "machine", "systemDiskEncryption")
	if sde.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("document %d: machine.systemDiskEncryption must be a mapping (line %d)", doc, sde.Line)
	}
	var vols []Volume
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
			return nil, fmt.Errorf("document %d line %d: unknown field %q (want state or ephemeral)", doc, key.Line, path)
		}
		if errs := unknownFields(val, reflect.TypeOf(Encryption{}), path+"."); len(errs) > 0 {
			return nil, fmt.Errorf("document %d (%s): %w", doc, path, errors.Join(errs...))
		}
		var enc Encryption
		if err := val.Decode(&enc); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", doc, path, err)
		}
		setKeyLines(val, &enc)
		vols = append(vols, Volume{ID: id, Kind: KindSystemDiskEncryption, Name: id, Doc: doc, Encryption: &enc, encPath: path})
	}
	return vols, nil
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
	if errs := unknownFields(node, reflect.TypeOf(document{}), ""); len(errs) > 0 {
		return nil, nil, fmt.Errorf("%s: %w", where, errors.Join(errs...))
	}
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
	var probs []Problem
	switch kind {
	case KindVolumeConfig:
		if d.Name != StateVolume && d.Name != EphemeralVolume {
			probs = append(probs, Problem{Doc: doc, Volume: d.Name, Field: "name", Line: line(node, "name"), Warning: true,
				Msg: fmt.Sprintf("cryptinit handles the system volumes %s and %s only; this document is ignored", StateVolume, EphemeralVolume)})
			return nil, probs, nil
		}
		vol.ID = d.Name
	case KindUserVolumeConfig:
		if d.Name == "" {
			probs = append(probs, Problem{Doc: doc, Field: "name", Line: node.Line,
				Msg: "a UserVolumeConfig needs a name", Fix: "add name: <volume name>; the partition label is u-<name>"})
		}
		vol.ID = "u-" + d.Name
		if m := lookup(node, "provisioning", "diskSelector", "match"); m != nil && m.Kind == yaml.ScalarNode {
			vol.DiskSelector = strings.TrimSpace(m.Value)
		}
	}
	return vol, probs, nil
}

// unknownFields reports every mapping key under node that has no field in t,
// with its line, walking nested structs, pointers and slices.
func unknownFields(node *yaml.Node, t reflect.Type, path string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(yaml.Node{}) {
		return nil // free-form subtree
	}
	var errs []error
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
				errs = append(errs, fmt.Errorf("line %d: unknown field %q%s", key.Line, path+key.Value, suggest(key.Value, fields)))
				continue
			}
			errs = append(errs, unknownFields(val, ft, path+key.Value+".")...)
		}
	case reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			return nil
		}
		for i, item := range node.Content {
			errs = append(errs, unknownFields(item, t.Elem(), fmt.Sprintf("%s[%d].", strings.TrimSuffix(path, "."), i))...)
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
