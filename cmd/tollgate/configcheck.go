package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	goyaml "github.com/goccy/go-yaml"
	goyamlparser "github.com/goccy/go-yaml/parser"
	"go.yaml.in/yaml/v3"
)

// Configuration errors read "FILE:LINE: message", like a compiler's, so an
// editor can jump to the line. This file turns YAML nodes and yaml.v3's
// errors into such messages: unknown keys with the keys valid at that
// level, values of the wrong kind with what is expected (durations written
// as bare numbers get "write 30s"), and syntax errors at the file's line.

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	// yamlLine matches the "line N: " yaml.v3 puts before each message.
	yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)
)

// maxQuoted bounds how much of a value an error message quotes.
const maxQuoted = 40

// checkNode walks n against the Go type t and returns one error per
// unknown key or value of the wrong kind, each with the file's line. where
// is the dotted path of n ("" at the top level). Aliases are not followed:
// the decoder checks what they point to.
func checkNode(file string, n *yaml.Node, t reflect.Type, where string) []error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind == yaml.AliasNode || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch {
	case t == durationType:
		return checkDuration(file, n, where)
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return []error{fmt.Errorf("%s:%d: %s: want a mapping with the keys %s, got %s",
				file, n.Line, name(where), strings.Join(yamlKeys(t), ", "), describe(n))}
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fieldByKey(t, k.Value)
			if !ok {
				errs = append(errs, fmt.Errorf("%s:%d: unknown key %s %s; valid keys: %s",
					file, k.Line, quote(k.Value), in(where), strings.Join(yamlKeys(t), ", ")))
				continue
			}
			errs = append(errs, checkNode(file, v, f.Type, join(where, k.Value))...)
		}
		return errs
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return []error{fmt.Errorf("%s:%d: %s: want a list, got %s", file, n.Line, name(where), describe(n))}
		}
		var errs []error
		for i, e := range n.Content {
			errs = append(errs, checkNode(file, e, t.Elem(), fmt.Sprintf("%s[%d]", where, i))...)
		}
		return errs
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return []error{fmt.Errorf("%s:%d: %s: want a mapping, got %s", file, n.Line, name(where), describe(n))}
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			errs = append(errs, checkNode(file, n.Content[i+1], t.Elem(), join(where, n.Content[i].Value))...)
		}
		return errs
	}
	// A scalar: let the decoder say whether it fits.
	if n.Kind != yaml.ScalarNode {
		return []error{fmt.Errorf("%s:%d: %s: want %s, got %s", file, n.Line, name(where), kindName(t), describe(n))}
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return []error{fmt.Errorf("%s:%d: %s: want %s, got %s", file, n.Line, name(where), kindName(t), describe(n))}
	}
	return nil
}

// checkDuration accepts a Go duration string ("30s", "1m30s").
func checkDuration(file string, n *yaml.Node, where string) []error {
	if n.Kind != yaml.ScalarNode {
		return []error{fmt.Errorf("%s:%d: %s: want a duration such as 30s, 5m or 1h, got %s", file, n.Line, name(where), describe(n))}
	}
	if _, err := time.ParseDuration(n.Value); err == nil && n.Tag == "!!str" {
		return nil
	}
	if _, err := strconv.ParseFloat(n.Value, 64); err == nil {
		return []error{fmt.Errorf("%s:%d: %s: %s is a number without a unit; durations need one: write %ss (or ms, m, h)",
			file, n.Line, name(where), n.Value, n.Value)}
	}
	return []error{fmt.Errorf("%s:%d: %s: want a duration such as 30s, 5m or 1h, got %s", file, n.Line, name(where), describe(n))}
}

// fieldByKey finds the field of struct t whose yaml key is key (exact
// case, as the decoder matches).
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if k, ok := yamlKey(f); ok && k == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// yamlKeys lists the yaml keys of struct t in declaration order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if k, ok := yamlKey(t.Field(i)); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

func yamlKey(f reflect.StructField) (string, bool) {
	if !f.IsExported() {
		return "", false
	}
	tag := f.Tag.Get("yaml")
	if tag == "-" {
		return "", false
	}
	k, _, _ := strings.Cut(tag, ",")
	if k == "" {
		k = strings.ToLower(f.Name) // yaml.v3's default
	}
	return k, true
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a value of another kind"
}

// describe names what a node holds, quoting at most maxQuoted characters
// of a scalar. Configuration values are settings, not secrets: secrets
// live in the key and token files.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return quote(n.Value)
}

func quote(s string) string {
	if r := []rune(s); len(r) > maxQuoted {
		s = string(r[:maxQuoted]) + "…"
	}
	return strconv.Quote(s)
}

func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}

func name(where string) string {
	if where == "" {
		return "the configuration"
	}
	return where
}

func in(where string) string {
	if where == "" {
		return "at the top level"
	}
	return "in " + where
}

// syntaxError turns a yaml.v3 syntax error into "FILE:LINE: message".
// yaml.v3 reports the line where the enclosing block began, counted from
// zero, rather than where the problem is; go-yaml's parser locates the
// problem itself, so its line and message are used when it agrees that the
// document is invalid.
func syntaxError(file string, b []byte, err error) error {
	if _, perr := goyamlparser.ParseBytes(b, 0); perr != nil {
		var se *goyaml.SyntaxError
		if errors.As(perr, &se) && se.Token != nil && se.Token.Position != nil {
			return fmt.Errorf("%s:%d: invalid YAML: %s", file, se.Token.Position.Line, se.Message)
		}
	}
	// go-yaml found nothing wrong: a check only yaml.v3 makes, such as a
	// repeated key, whose line yaml.v3 reports right.
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s:%s: invalid YAML: %s", file, m[1], msg[len(m[0]):])
	}
	return fmt.Errorf("%s: invalid YAML: %s", file, strings.TrimPrefix(msg, "yaml: "))
}

// decodeError turns the decoder's errors ("line N: …" each) into
// "FILE:N: …" lines. checkNode catches nearly everything first; this is
// the safety net.
func decodeError(file string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	errs := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := yamlLine.FindStringSubmatch(e); m != nil {
			errs = append(errs, fmt.Errorf("%s:%s: %s", file, m[1], e[len(m[0]):]))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s", file, e))
	}
	return errors.Join(errs...)
}
