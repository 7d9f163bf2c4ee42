// Package rwclient sends remote-write 1.0 requests the way Prometheus does,
// for the demo and the load tool (Cardinal's own forwarder is package
// forward, with retries and outcome mapping).
package rwclient

import (
	"bytes"
	"context"
	"io"
	"net/http"
)

// Post sends one snappy-compressed remote-write 1.0 body to url with the
// protocol's headers, drains and closes the answer, and returns its status.
func Post(ctx context.Context, client *http.Client, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}
