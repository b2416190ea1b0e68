package apikey_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tollgate/tollgate/pdp/authn/apikey"
	"github.com/tollgate/tollgate/pdp/credential"
)

func TestGenerateFormat(t *testing.T) {
	g, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := g.Key.Reveal()
	if len(key) != apikey.KeyLen || apikey.KeyLen != 60 {
		t.Fatalf("key length = %d, KeyLen = %d, want 60", len(key), apikey.KeyLen)
	}
	if !strings.HasPrefix(key, "tgk_"+g.ID+"_") {
		t.Errorf("key does not start with tgk_<id>_")
	}
	if !apikey.ValidID(g.ID) {
		t.Errorf("ValidID(%q) = false", g.ID)
	}
	if id, err := apikey.KeyID(key); err != nil || id != g.ID {
		t.Errorf("KeyID = %q, %v; want %q", id, err, g.ID)
	}
	if g.Hash != apikey.HashKey(g.Key) {
		t.Errorf("Hash != HashKey(Key)")
	}
	if !strings.HasPrefix(g.Hash, "sha256:") || len(g.Hash) != len("sha256:")+64 {
		t.Errorf("hash %q has the wrong form", g.Hash)
	}
	if strings.Contains(g.Hash, key[len(key)-apikey.SecretLen:]) {
		t.Errorf("hash contains the secret")
	}
}

func TestGeneratedKeyPrintsRedacted(t *testing.T) {
	g, err := apikey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{g.Key.String(), g.Key.GoString()} {
		if strings.Contains(s, g.Key.Reveal()) {
			t.Errorf("printing the key reveals it: %q", s)
		}
	}
}

func TestGenerateIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		g, err := apikey.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if seen[g.ID] {
			t.Fatalf("duplicate id %q", g.ID)
		}
		seen[g.ID] = true
	}
}

func TestGenerateDeterministicReader(t *testing.T) {
	src := bytes.Repeat([]byte{0xff}, 40) // all ones: id "777…", secret "___…" (contains the separator)
	g, err := apikey.Generate(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != "777777777777" {
		t.Errorf("id = %q", g.ID)
	}
	if got := g.Key.Reveal(); !strings.HasSuffix(got, strings.Repeat("_", 42)+"8") {
		t.Errorf("secret = %q", got[len(got)-apikey.SecretLen:])
	}
	if id, err := apikey.KeyID(g.Key.Reveal()); err != nil || id != g.ID {
		t.Errorf("a secret full of underscores must still parse: KeyID = %q, %v", id, err)
	}
}

func TestGenerateShortRead(t *testing.T) {
	for name, r := range map[string]io.Reader{
		"short": bytes.NewReader(make([]byte, 39)),
		"error": iotest.ErrReader(errors.New("no entropy")),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := apikey.Generate(r); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	valid := "tgk_abcdefgh2345_" + strings.Repeat("A", 42) + "w"
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"valid", valid, true},
		{"secret with dash and underscore", "tgk_abcdefgh2345_" + strings.Repeat("-_", 21) + "Q", true},
		{"empty", "", false},
		{"wrong prefix", "tgx_" + valid[4:], false},
		{"upper-case prefix", "TGK_" + valid[4:], false},
		{"too short", valid[:59], false},
		{"too long", valid + "A", false},
		{"upper-case id", "tgk_ABCDEFGH2345_" + valid[17:], false},
		{"id with 1", "tgk_abcdefgh2341_" + valid[17:], false},
		{"id with 8", "tgk_abcdefgh2348_" + valid[17:], false},
		{"missing separator", "tgk_abcdefgh2345A" + valid[17:], false},
		{"std base64 plus", valid[:59] + "+", false},
		{"std base64 slash", valid[:59] + "/", false},
		{"padding", valid[:59] + "=", false},
		{"space", valid[:59] + " ", false},
		{"non-ASCII", valid[:58] + "é", false},
		{"NUL", valid[:59] + "\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := apikey.KeyID(tt.key)
			if tt.ok {
				if err != nil || id != "abcdefgh2345" {
					t.Fatalf("KeyID = %q, %v", id, err)
				}
				return
			}
			if !errors.Is(err, apikey.ErrMalformedKey) {
				t.Fatalf("KeyID error = %v, want ErrMalformedKey", err)
			}
			if tt.key != "" && strings.Contains(err.Error(), tt.key) {
				t.Fatalf("error reveals the key")
			}
		})
	}
}

func TestHashKeyKnownAnswer(t *testing.T) {
	// echo -n abc | sha256sum
	const want = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := apikey.HashKey(credential.NewSecret("abc")); got != want {
		t.Fatalf("HashKey = %q, want %q", got, want)
	}
}
