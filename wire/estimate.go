package wire

// EstimateDecodedBytes returns what decoding src (remote write 2.0 when v2
// is set) will make DecodedBytes report, at least, without decoding it: a
// walk over the fields of the request and of its series that allocates
// nothing and costs a small part of a decode. It lets admission control
// refuse a request before its decoding allocates: a body of empty series
// or labels decodes into up to a hundred times its size. On malformed
// input it returns what it counted up to the error, which decoding then
// reports.
func EstimateDecodedBytes(src []byte, v2 bool) int {
	n := 0
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return n
		}
		i = next
		if wt != wireBytes {
			if i, err = skipField(src, i, wt); err != nil {
				return n
			}
			continue
		}
		var data []byte
		if data, i, err = readBytes(src, i); err != nil {
			return n
		}
		switch {
		case !v2 && num == 1:
			n += sizeSeries + estimateSeriesV1(data)
		case !v2 && num == 3:
			n += sizeMetadata
		case v2 && num == 4:
			n += sizeSymbol
		case v2 && num == 5:
			n += sizeSeries + estimateSeriesV2(data)
		}
	}
	return n
}

// forFields calls f with the number, wire type and (for length-delimited
// fields) the data of every field of src, until the end or a malformed
// field.
func forFields(src []byte, f func(num int32, wt uint8, data []byte)) {
	for i := 0; i < len(src); {
		num, wt, next, err := readTag(src, i)
		if err != nil {
			return
		}
		i = next
		var data []byte
		if wt == wireBytes {
			if data, i, err = readBytes(src, i); err != nil {
				return
			}
		} else if i, err = skipField(src, i, wt); err != nil {
			return
		}
		f(num, wt, data)
	}
}

func estimateSeriesV1(src []byte) int {
	n := 0
	forFields(src, func(num int32, _ uint8, data []byte) {
		switch num {
		case 1:
			n += sizeLabel
		case 2:
			n += sizeSample
		case 3:
			n += sizeExemplar
			forFields(data, func(num int32, _ uint8, _ []byte) {
				if num == 1 {
					n += sizeLabel
				}
			})
		case 4:
			n += sizeHistogram
		}
	})
	return n
}

// estimateSeriesV2 counts a series' references, every two of which make a
// label; a packed run holds as many as it has bytes that end a varint.
func estimateSeriesV2(src []byte) int {
	n := 0
	refs := func(wt uint8, data []byte) {
		k := 1 // unpacked: one reference
		if wt == wireBytes {
			k = 0
			for _, b := range data {
				if b < 0x80 {
					k++
				}
			}
		}
		n += (k + 1) / 2 * sizeLabel
	}
	forFields(src, func(num int32, wt uint8, data []byte) {
		switch num {
		case 1:
			refs(wt, data)
		case 2:
			n += sizeSample
		case 3:
			n += sizeHistogram
		case 4:
			n += sizeExemplar
			forFields(data, func(num int32, wt uint8, data []byte) {
				if num == 1 {
					refs(wt, data)
				}
			})
		case 5:
			n += sizeMetadata // at most one derived per series
		}
	})
	return n
}
