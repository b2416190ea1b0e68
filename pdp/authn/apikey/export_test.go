package apikey

// SealBody appends to body the seal line the writers append, counting the
// records body decodes to (0 when it does not decode), for tests that write
// key files by hand.
func SealBody(body []byte) []byte {
	n := 0
	if s, err := decode(body); err == nil {
		n = s.Len()
	}
	return SealBodyCount(body, n)
}

// SealBodyCount appends a seal line stating records records to body.
func SealBodyCount(body []byte, records int) []byte {
	return seal(append([]byte(nil), body...), records)
}
