package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestUnmarshalRejectsWhatGogoRejects(t *testing.T) {
	f := func(name string, src []byte) {
		t.Helper()
		var pb prompb.WriteRequest
		if err := pb.Unmarshal(src); err == nil {
			t.Errorf("%s: the case is wrong, gogo accepts %x", name, src)
		}
		var r Request
		err := r.Unmarshal(src)
		if err == nil {
			t.Errorf("%s: Unmarshal(%x) succeeded", name, src)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v does not wrap ErrMalformed", name, err)
		}
	}
	eight := make([]byte, 8)
	f("field 0", []byte{0x00, 0x00})
	f("32 MiB of zeros", make([]byte, 32<<20))
	f("field 0 after a series", cat(bytesField(1, nil), []byte{0x00}))
	f("field 0 in a series", bytesField(1, []byte{0x00, 0x00}))
	f("field 0 in a label", bytesField(1, bytesField(1, []byte{0x00, 0x00})))
	f("field 0 in a sample", bytesField(1, bytesField(2, []byte{0x00, 0x00})))
	f("field 0 in an exemplar", bytesField(1, bytesField(3, []byte{0x00, 0x00})))
	f("field 0 in an exemplar label", bytesField(1, bytesField(3, bytesField(1, []byte{0x00, 0x00}))))
	f("field 0 in a histogram", bytesField(1, bytesField(4, []byte{0x00, 0x00})))
	f("field 0 in a span", bytesField(1, bytesField(4, bytesField(11, []byte{0x00, 0x00}))))
	f("field 0 in metadata", bytesField(3, []byte{0x00, 0x00}))
	f("field 2^31 (negative as int32)", cat(appendVarint(nil, 1<<34|2), []byte{0x00}))
	f("end group at the top", []byte{0x0c})
	f("end group in a series", bytesField(1, []byte{0x14}))
	f("end group in a label", bytesField(1, bytesField(1, []byte{0x0c})))

	f("timeseries as varint", varintField(1, 1))
	f("metadata as fixed64", fixed64Field(3, 0))
	f("label as fixed32", bytesField(1, []byte{0x0d, 0, 0, 0, 0}))
	f("sample as varint", bytesField(1, varintField(2, 1)))
	f("exemplar as varint", bytesField(1, varintField(3, 1)))
	f("histogram as varint", bytesField(1, varintField(4, 1)))
	f("label name as varint", bytesField(1, bytesField(1, varintField(1, 1))))
	f("label value as fixed64", bytesField(1, bytesField(1, fixed64Field(2, 0))))
	f("sample value as varint", bytesField(1, bytesField(2, varintField(1, 1))))
	f("sample timestamp as fixed64", bytesField(1, bytesField(2, fixed64Field(2, 0))))
	f("exemplar label as varint", bytesField(1, bytesField(3, varintField(1, 1))))
	f("exemplar value as varint", bytesField(1, bytesField(3, varintField(2, 1))))
	f("exemplar timestamp as bytes", bytesField(1, bytesField(3, bytesField(3, nil))))
	f("metadata type as bytes", bytesField(3, bytesField(1, []byte{0x41})))
	f("metadata help as varint", bytesField(3, varintField(4, 1)))
	f("histogram schema as bytes", bytesField(1, bytesField(4, bytesField(4, nil))))
	f("histogram span offset as fixed64", bytesField(1, bytesField(4, bytesField(11, fixed64Field(1, 0)))))

	f("truncated series", []byte{0x0a, 0x05, 0x0a})
	f("truncated label", bytesField(1, []byte{0x0a, 0x03, 0x0a}))
	f("truncated label name", bytesField(1, bytesField(1, []byte{0x0a, 0x05, 'a'})))
	f("truncated sample value", bytesField(1, bytesField(2, []byte{0x09, 0x00})))
	f("sample timestamp tag without its varint", bytesField(1, bytesField(2, []byte{0x10})))
	f("sample value, then a timestamp tag without its varint", bytesField(1, bytesField(2, append(fixed64Field(1, 1), 0x10))))
	f("sample timestamp varint cut short", bytesField(1, bytesField(2, []byte{0x10, 0x80})))
	f("truncated exemplar value", bytesField(1, bytesField(3, []byte{0x11, 0x00})))
	f("truncated histogram", bytesField(1, bytesField(4, []byte{0x08})))
	f("truncated packed deltas", bytesField(1, bytesField(4, []byte{0x62, 0x05, 0x02})))
	f("truncated metadata", bytesField(3, []byte{0x12, 0x05}))
	f("truncated unknown field", []byte{0x2a, 0x05, 0x00})
	f("truncated unknown fixed32", []byte{0x2d, 0x00})
	f("truncated unknown fixed64", cat([]byte{0x29}, eight[:7]))
	f("unterminated group", []byte{0x2b, 0x08, 0x01})
	f("group ending past the message", []byte{0x2b, 0x29, 0x00})
	f("illegal wire type 6", []byte{0x2e})
	f("illegal wire type 7 in a series", bytesField(1, []byte{0x2f}))

	elevenBytes := bytes.Repeat([]byte{0xff}, 10)
	f("eleven-byte series length", cat([]byte{0x0a}, elevenBytes, []byte{0x01}))
	f("eleven-byte tag", cat(elevenBytes, []byte{0x01}))
	f("eleven-byte timestamp", bytesField(1, bytesField(2, cat([]byte{0x10}, elevenBytes, []byte{0x01}))))
	f("eleven-byte unknown varint", cat([]byte{0x28}, elevenBytes, []byte{0x01}))
	f("negative length", cat([]byte{0x2a}, bytes.Repeat([]byte{0xff}, 9), []byte{0x01}))
}

// TestUnmarshalAcceptsWhatGogoAccepts: layouts the protobuf specification
// frowns on, or that a stricter decoder would reject, but Prometheus reads.
func TestUnmarshalAcceptsWhatGogoAccepts(t *testing.T) {
	f := func(name string, src []byte) {
		t.Helper()
		var pb prompb.WriteRequest
		if err := pb.Unmarshal(src); err != nil {
			t.Fatalf("%s: the case is wrong, gogo says %v", name, err)
		}
		var r Request
		if err := r.Unmarshal(src); err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if err := sameAsPrompb(&r, &pb); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	label := bytesField(1, cat(bytesField(1, []byte("__name__")), bytesField(2, []byte("up"))))
	sample := bytesField(2, cat(fixed64Field(1, 0x3ff0000000000000), varintField(2, 5)))
	series := bytesField(1, cat(label, sample))
	group := cat(appendTag(nil, 99, 3), varintField(1, 7), appendTag(nil, 2, 3), []byte{0x00, 0x00}, appendTag(nil, 2, 4), appendTag(nil, 99, 4))
	tenBytes := cat(bytes.Repeat([]byte{0xff}, 9), []byte{0x7f}) // overflows 64 bits; gogo drops the bits

	f("empty", nil)
	f("series", series)
	f("group at the top", cat(group, series))
	f("group in a series", bytesField(1, cat(label, group, sample)))
	f("group in a label", bytesField(1, bytesField(1, cat(group, bytesField(1, []byte("__name__"))))))
	f("group in a sample", bytesField(1, bytesField(2, cat(varintField(2, 1), group))))
	f("group in a histogram", bytesField(1, bytesField(4, cat(group, varintField(15, 9)))))
	f("group in metadata", bytesField(3, group))
	f("ten-byte varint overflowing in a timestamp", bytesField(1, bytesField(2, cat([]byte{0x10}, tenBytes))))
	f("ten-byte varint overflowing in an unknown field", cat([]byte{0x28}, tenBytes, series))
	f("ten-byte varint in a histogram", bytesField(1, bytesField(4, cat([]byte{0x78}, tenBytes))))
	f("field 2^32+1 is field 1", cat(appendVarint(nil, (1<<32+1)<<3|2), appendVarint(nil, uint64(len(series)-2)), series[2:]))
	f("field 2^32+5 is unknown", cat(appendVarint(nil, (1<<32+5)<<3), []byte{0x01}, series)) // a varint
	f("fixed32 unknown field", cat([]byte{0x2d, 1, 2, 3, 4}, series))
	f("the reserved field 2", cat(bytesField(2, []byte("x")), series))
	f("label fields twice, the last wins", bytesField(1, bytesField(1, cat(bytesField(1, []byte("a")), bytesField(1, []byte("b")), bytesField(2, []byte("v"))))))
	f("sample fields reversed", bytesField(1, bytesField(2, cat(varintField(2, 5), fixed64Field(1, 1)))))
	f("histogram timestamp twice, the last wins", bytesField(1, bytesField(4, cat(varintField(15, 1), varintField(15, 2)))))
	f("invalid but decodable histogram", bytesField(1, cat(label, bytesField(4, marshalHistogram(t, intHist(0, 1, spans(0, 5), 1))))))
	f("packed deltas running past their end", bytesField(1, bytesField(4, []byte{0x62, 0x01, 0x82, 0x00})))
	f("metadata type beyond int32", bytesField(3, varintField(1, 1<<40|3)))
}
