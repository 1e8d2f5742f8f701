// tlogcheck: an independent verifier of edge's audit checkpoints and proofs, built only on
// the Go reference code for C2SP signed notes and RFC 6962 trees (golang.org/x/mod/sumdb/note
// and sumdb/tlog, Debian's golang-golang-x-mod-dev), used unchanged. It shares no code with
// edge: tests/test_tlog.py builds it offline (GOPATH mode, GOPATH=/usr/share/gocode).
//
//	tlogcheck open VKEY NOTE                          print "ORIGIN SIZE ROOT" of a verified checkpoint
//	tlogcheck inclusion VKEY NOTE LINE_FILE SEQ PROOF line SEQ (its bytes in LINE_FILE) is in the tree
//	tlogcheck consistency VKEY OLD_NOTE NOTE PROOF    OLD_NOTE's tree is a prefix of NOTE's
//
// PROOF is a file of base64 hashes, one a line. Exit status 0: verified; 1: not.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type head struct {
	origin string
	size   int64
	root   tlog.Hash
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlogcheck: "+format+"\n", args...)
	os.Exit(1)
}

func read(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return data
}

// open verifies the signed note at path with vkey and parses its C2SP tlog-checkpoint body.
func open(vkey, path string) head {
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open(read(path), note.VerifierList(verifier))
	if err != nil {
		fail("%s: %v", path, err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		fail("%s: not a checkpoint body", path)
	}
	if lines[0] != verifier.Name() {
		fail("%s: origin %q is not the key's name %q", path, lines[0], verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		fail("%s: tree size %q", path, lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("%s: root hash %q: %v", path, lines[2], err)
	}
	return head{lines[0], size, root}
}

func proof(path string) []tlog.Hash {
	var hashes []tlog.Hash
	for _, line := range strings.Split(strings.TrimSuffix(string(read(path)), "\n"), "\n") {
		if line == "" {
			continue
		}
		h, err := tlog.ParseHash(line)
		if err != nil {
			fail("%s: %v", path, err)
		}
		hashes = append(hashes, h)
	}
	return hashes
}

func main() {
	args := os.Args[1:]
	switch {
	case len(args) == 3 && args[0] == "open":
		h := open(args[1], args[2])
		fmt.Printf("%s %d %s\n", h.origin, h.size, h.root)
	case len(args) == 6 && args[0] == "inclusion":
		h := open(args[1], args[2])
		line := bytes.TrimSuffix(read(args[3]), []byte("\n"))
		seq, err := strconv.ParseInt(args[4], 10, 64)
		if err != nil {
			fail("SEQ: %v", err)
		}
		if err := tlog.CheckRecord(tlog.RecordProof(proof(args[5])), h.size, h.root, seq-1, tlog.RecordHash(line)); err != nil {
			fail("inclusion of line %d in the tree of %d: %v", seq, h.size, err)
		}
		fmt.Printf("line %d is in the tree of %d\n", seq, h.size)
	case len(args) == 5 && args[0] == "consistency":
		old, h := open(args[1], args[2]), open(args[1], args[3])
		if err := tlog.CheckTree(tlog.TreeProof(proof(args[4])), h.size, h.root, old.size, old.root); err != nil {
			fail("the tree of %d is not a prefix of the tree of %d: %v", old.size, h.size, err)
		}
		fmt.Printf("the tree of %d is a prefix of the tree of %d\n", old.size, h.size)
	default:
		fail("usage: open VKEY NOTE | inclusion VKEY NOTE LINE_FILE SEQ PROOF | consistency VKEY OLD_NOTE NOTE PROOF")
	}
}
