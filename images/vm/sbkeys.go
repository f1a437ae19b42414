package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// ExtraDBCert makes a new self-signed certificate in dir (PEM and DER), as a
// second db entry that changes PCR 7 without changing which key signs the UKI.
func ExtraDBCert(dir, name string) (pem, der string, err error) {
	pem = filepath.Join(dir, name+".crt")
	der = filepath.Join(dir, name+".der")
	key := filepath.Join(dir, name+".key")
	if out, err := exec.Command("openssl", "req", "-quiet", "-newkey", "rsa:2048", "-nodes",
		"-keyout", key, "-new", "-x509", "-sha256", "-days", "3650",
		"-subj", "/CN=cryptinit test "+name+"/", "-out", pem).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("vm: openssl req %s: %w: %s", name, err, out)
	}
	if out, err := exec.Command("openssl", "x509", "-in", pem, "-outform", "DER", "-out", der).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("vm: openssl x509 %s: %w: %s", name, err, out)
	}
	return pem, der, nil
}

// EnrollVars makes, in dir, an OVMF variable store with the build's PK and
// KEK and a db holding the build's db certificate plus extraDB (PEM files),
// the db list signed by the build's KEK. It boots the build's signed
// systemd-boot once with `secure-boot-enroll force` on an empty store, as
// images/build.sh does for the standard fixture, and returns the store.
func EnrollVars(a *Artifacts, dir string, extraDB ...string) (string, error) {
	keys := filepath.Join(a.Dir, "keys")
	guid, err := os.ReadFile(filepath.Join(keys, "guid"))
	if err != nil {
		return "", fmt.Errorf("vm: Secure Boot key owner GUID: %w", err)
	}
	g := string(bytes.TrimSpace(guid))
	esl, err := os.ReadFile(filepath.Join(keys, "db.esl"))
	if err != nil {
		return "", fmt.Errorf("vm: build's db list: %w", err)
	}
	for i, crt := range extraDB {
		out := filepath.Join(dir, fmt.Sprintf("extra%d.esl", i))
		if b, err := exec.Command("cert-to-efi-sig-list", "-g", g, crt, out).CombinedOutput(); err != nil {
			return "", fmt.Errorf("vm: cert-to-efi-sig-list %s: %w: %s", crt, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			return "", err
		}
		esl = append(esl, b...)
	}
	dbESL := filepath.Join(dir, "db.esl")
	if err := os.WriteFile(dbESL, esl, 0o644); err != nil {
		return "", err
	}
	dbAuth := filepath.Join(dir, "db.auth")
	if b, err := exec.Command("sign-efi-sig-list", "-g", g, "-k", filepath.Join(keys, "KEK.key"),
		"-c", filepath.Join(keys, "KEK.crt"), "db", dbESL, dbAuth).CombinedOutput(); err != nil {
		return "", fmt.Errorf("vm: sign-efi-sig-list db: %w: %s", err, b)
	}
	conf := filepath.Join(dir, "loader.conf")
	if err := os.WriteFile(conf, []byte("timeout 0\nsecure-boot-enroll force\n"), 0o644); err != nil {
		return "", err
	}
	esp := filepath.Join(dir, "enroll-esp.img")
	if err := CreateESP(esp, 32, []ESPFile{
		{Src: filepath.Join(a.Dir, "BOOTX64.EFI"), Dest: "/EFI/BOOT/BOOTX64.EFI"},
		{Src: conf, Dest: "/loader/loader.conf"},
		{Src: filepath.Join(keys, "PK.auth"), Dest: "/loader/keys/auto/PK.auth"},
		{Src: filepath.Join(keys, "KEK.auth"), Dest: "/loader/keys/auto/KEK.auth"},
		{Src: dbAuth, Dest: "/loader/keys/auto/db.auth"},
	}); err != nil {
		return "", err
	}
	vars := filepath.Join(dir, "OVMF_VARS.enrolled.fd")
	if err := copyFile(ovmfVars, vars); err != nil {
		return "", err
	}
	slots <- struct{}{}
	defer func() { <-slots }()
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	log := filepath.Join(dir, "enroll-console.log")
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-machine", "q35,smm=on", "-m", "256",
		"-nographic", "-no-reboot",
		"-global", "driver=cfi.pflash01,property=secure,value=on",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCodeSB,
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		"-drive", "if=none,id=esp,format=raw,file="+esp,
		"-device", "virtio-blk-pci,drive=esp,bootindex=0",
		"-serial", "file:"+log, "-monitor", "none", "-display", "none")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return "", fmt.Errorf("vm: enrollment boot did not end in 240 s (console %s): %s", log, out)
	}
	if err != nil {
		return "", fmt.Errorf("vm: enrollment boot: %w: %s", err, out)
	}
	return vars, nil
}

// UseVars replaces the node's variable store for firmware f (kept across
// boots) with a copy of path, as if its Secure Boot keys had been updated.
func (n *Node) UseVars(f Firmware, path string) error {
	return copyFile(path, filepath.Join(n.Dir, "OVMF_VARS."+f.String()+".fd"))
}
