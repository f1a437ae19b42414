package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page (section 1) for every command into DIR",
		Long: `Write a man page (section 1, roff) for every command into DIR, made from the
commands themselves: cryptctl.1, cryptctl-luks.1, cryptctl-luks-format.1, ...
Existing pages of the same names are replaced. Read one with man -l FILE.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := writeManPages(cmd.Root(), args[0])
			if err != nil {
				return fmt.Errorf("man: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d man pages in %s\n", n, args[0])
			return nil
		},
	}
}

// writeManPages writes one page per visible command under root into dir
// (created if missing) and returns how many.
func writeManPages(root *cobra.Command, dir string) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	walkCommands(root, func(c *cobra.Command) {
		if !manPage(c) {
			return
		}
		if err := os.WriteFile(filepath.Join(dir, manName(c)+".1"), manRoff(c), 0o644); err != nil {
			errs = append(errs, err)
			return
		}
		n++
	})
	return n, errors.Join(errs...)
}

// manPage tells whether c gets a page: not hidden, not cobra's internal
// __complete commands, and not help.
func manPage(c *cobra.Command) bool {
	return c.IsAvailableCommand() || c == c.Root()
}

// manName is the page name: the command path joined by '-'.
func manName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "-")
}

// manRoff renders c as a man(7) page.
func manRoff(c *cobra.Command) []byte {
	var b bytes.Buffer
	name := manName(c)
	fmt.Fprintf(&b, ".TH %q 1 \"\" \"cryptinit\" \"cryptctl manual\"\n", strings.ToUpper(name))
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", name, roffEscape(c.Short))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.nf\n%s\n.fi\n", roffText(c.UseLine()))
	desc := c.Long
	if desc == "" {
		desc = c.Short
	}
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", roffParagraphs(desc))
	manFlags(&b, "OPTIONS", c.NonInheritedFlags())
	manFlags(&b, "OPTIONS INHERITED FROM PARENT COMMANDS", c.InheritedFlags())
	if c.Example != "" {
		fmt.Fprintf(&b, ".SH EXAMPLES\n.nf\n.RS\n%s\n.RE\n.fi\n", roffText(c.Example))
	}
	b.WriteString(".SH EXIT STATUS\n.TP\n0\ndone\n.TP\n1\nan error (bad input, I/O, refused)\n.TP\n2\nno key opens the volume\n.TP\n3\nthe volume opened, but sync had problems with its key slots\n")
	var see []string
	if p := c.Parent(); p != nil {
		see = append(see, manName(p)+"(1)")
	}
	for _, s := range c.Commands() {
		if manPage(s) {
			see = append(see, manName(s)+"(1)")
		}
	}
	if len(see) > 0 {
		fmt.Fprintf(&b, ".SH SEE ALSO\n%s\n", roffEscape(strings.Join(see, ", ")))
	}
	return b.Bytes()
}

func manFlags(b *bytes.Buffer, title string, fs *pflag.FlagSet) {
	first := true
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		if first {
			fmt.Fprintf(b, ".SH %s\n", title)
			first = false
		}
		spec := "\\-\\-" + roffEscape(f.Name)
		if f.Shorthand != "" {
			spec = "\\-" + f.Shorthand + ", " + spec
		}
		if f.Value.Type() != "bool" {
			spec += " \\fI" + f.Value.Type() + "\\fR"
		}
		usage := f.Usage
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(b, ".TP\n\\fB%s\\fR\n%s\n", spec, roffEscape(usage))
	})
}

// roffEscape makes s safe inside a roff text line: backslashes and
// hyphens escaped.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// roffText escapes every line of s and keeps a line that starts with '.'
// or an apostrophe from being read as a request.
func roffText(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		l = roffEscape(l)
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		lines[i] = l
	}
	return strings.Join(lines, "\n")
}

// roffParagraphs turns blank-line separated text into .PP paragraphs.
func roffParagraphs(s string) string {
	paras := strings.Split(strings.TrimSpace(s), "\n\n")
	for i, p := range paras {
		paras[i] = roffText(p)
	}
	return strings.Join(paras, "\n.PP\n")
}
