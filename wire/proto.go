package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The readers in this file accept exactly what the gogo-generated decoders of
// prompb accept, because that is what Prometheus' receiver runs: a request
// Cardinal accepts and forwards must not be one the downstream rejects, and a
// request Prometheus would take must not get a 400 from Cardinal. gogo's
// rules differ from the protobuf specification and from easyproto in ways a
// fuzzer finds at once, so they are copied here deliberately:
//
//   - a varint has at most ten bytes, and bits beyond the 64th are dropped
//     instead of being an overflow;
//   - the field number is the tag shifted right by three and truncated to
//     int32; zero or negative is an error, so is a top-level end-group tag;
//   - unknown fields are skipped with proto2 groups understood (nested, end
//     tags not matched against start tags);
//   - packed repeated fields read element by element up to the end of the
//     packed field, but each element may run past it into the rest of the
//     enclosing message, where decoding then continues (see histogram.go).
//
// Errors are static values so that the readers allocate nothing; callers add
// the context.

var (
	errTruncated     = errors.New("unexpected end of data")
	errVarint        = errors.New("varint longer than ten bytes")
	errEndGroup      = errors.New("end-group tag outside a group")
	errBadWireType   = errors.New("illegal wire type")
	errBadFieldNum   = errors.New("illegal field number")
	errWrongWireType = errors.New("wrong wire type")
)

// readVarint decodes the varint at src[i:] and returns it with the index
// after it.
func readVarint(src []byte, i int) (uint64, int, error) {
	// Fast path: one byte.
	if i < len(src) && src[i] < 0x80 {
		return uint64(src[i]), i + 1, nil
	}
	return readVarintSlow(src, i)
}

func readVarintSlow(src []byte, i int) (uint64, int, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if i >= len(src) {
			return 0, i, errTruncated
		}
		b := src[i]
		i++
		// At shift 63 only the lowest bit of b survives, as in gogo.
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, i, nil
		}
	}
	return 0, i, errVarint
}

// readTag reads the field tag at src[i:]. The field number is truncated to
// int32 as gogo does; numbers below 1 and end-group tags are errors.
func readTag(src []byte, i int) (num int32, wt uint8, next int, err error) {
	var tag uint64
	// Fast path: a one-byte tag.
	if i < len(src) && src[i] < 0x80 {
		tag, next = uint64(src[i]), i+1
	} else if tag, next, err = readVarintSlow(src, i); err != nil {
		return 0, 0, next, err
	}
	num, wt = int32(tag>>3), uint8(tag&7)
	if wt == 4 {
		return num, wt, next, errEndGroup
	}
	if num <= 0 {
		return num, wt, next, errBadFieldNum
	}
	return num, wt, next, nil
}

// readBytes reads the length-delimited payload at src[i:], after its tag.
func readBytes(src []byte, i int) ([]byte, int, error) {
	n, i, err := readVarint(src, i)
	if err != nil {
		return nil, i, err
	}
	// A length of 2^63 or more is negative for gogo: an error either way.
	if n > uint64(len(src)-i) {
		return nil, i, errTruncated
	}
	end := i + int(n)
	return src[i:end:end], end, nil
}

// readFixed64 reads the eight-byte little-endian value at src[i:].
func readFixed64(src []byte, i int) (uint64, int, error) {
	if len(src)-i < 8 {
		return 0, i, errTruncated
	}
	return binary.LittleEndian.Uint64(src[i:]), i + 8, nil
}

// skipField skips the value of an unknown field of wire type wt whose tag
// ended at src[i], and returns the index after it. Groups are skipped whole,
// with the tags inside them read but not checked, as gogo's skip functions do.
func skipField(src []byte, i int, wt uint8) (int, error) {
	depth := 0
	for {
		var err error
		switch wt {
		case wireVarint:
			_, i, err = readVarint(src, i)
		case wireFixed64:
			_, i, err = readFixed64(src, i)
		case wireBytes:
			_, i, err = readBytes(src, i)
		case 3:
			depth++
		case 4:
			if depth == 0 {
				return i, errEndGroup
			}
			depth--
		case 5:
			if len(src)-i < 4 {
				return i, errTruncated
			}
			i += 4
		default:
			return i, errBadWireType
		}
		if err != nil {
			return i, err
		}
		if depth == 0 {
			return i, nil
		}
		if i >= len(src) {
			return i, errTruncated // an unterminated group
		}
		var tag uint64
		if tag, i, err = readVarint(src, i); err != nil {
			return i, err
		}
		wt = uint8(tag & 7)
	}
}

// fieldError says which field could not be read; the caller names the
// message.
func fieldError(num int32, err error) error {
	if errors.Is(err, errBadFieldNum) {
		return fmt.Errorf("%w %d", err, num)
	}
	return fmt.Errorf("field %d: %w", num, err)
}

func zigzag32(v uint64) int32 {
	u := uint32(v)
	return int32(u>>1) ^ -int32(u&1)
}

func zigzag64(v uint64) int64 {
	return int64(v>>1) ^ -int64(v&1)
}
