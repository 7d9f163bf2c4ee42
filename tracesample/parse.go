package tracesample

// Context is a parsed trace context.
type Context struct {
	// TraceID is the 128-bit trace id; 64-bit ids are left-padded with zeros.
	TraceID [16]byte
	// SpanID is the span id (the W3C parent-id), valid when HasSpan is set.
	SpanID [8]byte
	// HasSpan reports whether the value carried a span id. Plain hex trace
	// ids do not.
	HasSpan bool
}

// Parse extracts a trace context from one label value: a plain 16 or 32 hex
// trace id, a W3C traceparent, a B3 single header or a Jaeger uber-trace-id
// (see the package documentation for the exact grammar and sources).
// Malformed values, values without a trace id and values whose trace id is
// all zeros yield ok == false. Parse never panics and never allocates; the
// returned Context does not refer to value.
func Parse(value []byte) (c Context, ok bool) {
	n := len(value)
	switch {
	case n == 0:
		return Context{}, false
	case indexSep(value) >= 0:
		// Only Jaeger uses ':' (or its URL encoding %3A).
		ok = parseJaeger(&c, value)
	case n >= 3 && value[2] == '-':
		// No B3 trace id is 2 characters long, so this is a traceparent.
		ok = parseTraceparent(&c, value)
	case n == 16 || n == 32:
		// Fast path: the bare trace id of a trace_id / x_b3_traceid label.
		ok = decodeHex(c.TraceID[16-n/2:], value)
	default:
		ok = parseB3(&c, value)
	}
	if !ok || isZero(c.TraceID[:]) {
		return Context{}, false
	}
	return c, true
}

// parseTraceparent parses "vv-<32 hex>-<16 hex>-<2 hex>[-<future fields>]".
func parseTraceparent(c *Context, v []byte) bool {
	if len(v) < 55 {
		return false
	}
	hi, ok1 := unhex(v[0])
	lo, ok2 := unhex(v[1])
	if !ok1 || !ok2 {
		return false
	}
	switch version := hi<<4 | lo; {
	case version == 0xff:
		return false
	case version == 0:
		if len(v) != 55 {
			return false
		}
	default:
		// A future version: the version-00 prefix, then nothing or a new
		// field.
		if len(v) > 55 && v[55] != '-' {
			return false
		}
	}
	if v[35] != '-' || v[52] != '-' {
		return false
	}
	if !decodeHex(c.TraceID[:], v[3:35]) || !decodeHex(c.SpanID[:], v[36:52]) {
		return false
	}
	if _, ok := unhex(v[53]); !ok {
		return false
	}
	if _, ok := unhex(v[54]); !ok {
		return false
	}
	if isZero(c.SpanID[:]) {
		return false
	}
	c.HasSpan = true
	return true
}

// parseB3 parses "<16|32 hex>-<16 hex>[-<0|1|d>[-<16 hex>]]".
func parseB3(c *Context, v []byte) bool {
	var t int
	switch {
	case len(v) > 16 && v[16] == '-':
		t = 16
	case len(v) > 32 && v[32] == '-':
		t = 32
	default:
		return false
	}
	rest := v[t+1:]
	switch len(rest) {
	case 16:
	case 18, 35:
		if rest[16] != '-' {
			return false
		}
		switch rest[17] {
		case '0', '1', 'd', 'D':
		default:
			return false
		}
		if len(rest) == 35 {
			var parent [8]byte
			if rest[18] != '-' || !decodeHex(parent[:], rest[19:]) {
				return false
			}
		}
	default:
		return false
	}
	if !decodeHex(c.TraceID[16-t/2:], v[:t]) || !decodeHex(c.SpanID[:], rest[:16]) {
		return false
	}
	if isZero(c.SpanID[:]) {
		return false
	}
	c.HasSpan = true
	return true
}

// parseJaeger parses "<trace>:<span>:<parent>:<flags>" with ':' or "%3A"
// between the fields.
func parseJaeger(c *Context, v []byte) bool {
	var fields [4][]byte
	k, start, sepLen := 0, 0, 0
	for i := 0; i < len(v); {
		w := sepAt(v, i)
		if w == 0 {
			i++
			continue
		}
		if w < 0 || k == 3 || (sepLen != 0 && w != sepLen) {
			return false
		}
		sepLen = w
		fields[k] = v[start:i]
		k++
		i += w
		start = i
	}
	if k != 3 {
		return false
	}
	fields[3] = v[start:]
	var parent [8]byte
	var flags [1]byte
	if !decodeHexPadded(c.TraceID[:], fields[0]) ||
		!decodeHexPadded(c.SpanID[:], fields[1]) ||
		!decodeHexPadded(parent[:], fields[2]) ||
		!decodeHexPadded(flags[:], fields[3]) {
		return false
	}
	if isZero(c.SpanID[:]) {
		return false
	}
	c.HasSpan = true
	return true
}

// indexSep returns the index of the first ':' or '%' in v, or -1.
func indexSep(v []byte) int {
	for i, b := range v {
		if b == ':' || b == '%' {
			return i
		}
	}
	return -1
}

// sepAt returns the length of the Jaeger separator at v[i]: 1 for ':', 3 for
// "%3A" or "%3a", 0 when v[i] starts no separator and -1 for a '%' that
// starts anything else.
func sepAt(v []byte, i int) int {
	switch v[i] {
	case ':':
		return 1
	case '%':
		if i+2 < len(v) && v[i+1] == '3' && (v[i+2] == 'A' || v[i+2] == 'a') {
			return 3
		}
		return -1
	}
	return 0
}

// decodeHex decodes exactly 2*len(dst) hex characters from src into dst.
func decodeHex(dst, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	// Fast path: no branch per digit; a non-digit maps to 0xff, and one
	// check at the end sees it in the OR of all digits.
	var bad byte
	for i := range dst {
		hi, lo := unhexTable[src[2*i]], unhexTable[src[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// decodeHexPadded decodes 1 to 2*len(dst) hex characters from src into dst
// as a big-endian number, left-padding with zeros.
func decodeHexPadded(dst, src []byte) bool {
	if len(src) == 0 || len(src) > 2*len(dst) {
		return false
	}
	clear(dst)
	// Walk from the least significant digit; digit j from the right lands in
	// byte len(dst)-1-j/2, low nibble when j is even.
	for j := 0; j < len(src); j++ {
		d, ok := unhex(src[len(src)-1-j])
		if !ok {
			return false
		}
		dst[len(dst)-1-j/2] |= d << (4 * (j & 1))
	}
	return true
}

// unhex returns the value of one hex digit, either case.
func unhex(b byte) (byte, bool) {
	d := unhexTable[b]
	return d, d != 0xff
}

// unhexTable maps a byte to its hex digit value, or 0xff for a non-digit.
// It is a string so that it is a constant.
const unhexTable = "" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xff\xff\xff\xff\xff\xff" +
	"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// AppendTraceID appends c.TraceID as 32 lower-case hex characters to dst, the
// form of the trace_id exemplar label.
func AppendTraceID(dst []byte, c *Context) []byte {
	return appendHex(dst, c.TraceID[:])
}

// AppendSpanID appends c.SpanID as 16 lower-case hex characters to dst, the
// form of the span_id exemplar label. Callers should check c.HasSpan first;
// without a span it appends 16 zeros.
func AppendSpanID(dst []byte, c *Context) []byte {
	return appendHex(dst, c.SpanID[:])
}

func appendHex(dst, src []byte) []byte {
	for _, b := range src {
		dst = append(dst, hexDigits[b>>4], hexDigits[b&0x0f])
	}
	return dst
}
