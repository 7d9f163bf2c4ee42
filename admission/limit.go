package admission

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// cgroupFiles hold a container's memory limit: cgroup v2, then v1.
var cgroupFiles = []string{
	"/sys/fs/cgroup/memory.max",
	"/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// noLimit is the least value cgroup v1 reports for "unlimited" (a page
// count rounded, about 8 EiB); anything above a petabyte is no limit.
const noLimit = 1 << 50

// DetectLimit returns the memory limit of the container Cardinal runs in,
// from its cgroup, and the file it came from; 0 when there is none.
func DetectLimit() (int64, string) {
	return detectLimit(cgroupFiles)
}

func detectLimit(files []string) (int64, string) {
	for _, f := range files {
		v, err := readLimit(f)
		if err == nil && v > 0 && v < noLimit {
			return v, f
		}
	}
	return 0, ""
}

func readLimit(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, errors.New("unlimited")
	}
	return strconv.ParseInt(s, 10, 64)
}
