// Package rwclient sends remote-write 1.0 and 2.0 requests the way Prometheus does,
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
	return PostMessage(ctx, client, url, body, false)
}

// PostMessage is Post for a remote-write 2.0 body when v2 is set.
func PostMessage(ctx context.Context, client *http.Client, url string, body []byte, v2 bool) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Encoding", "snappy")
	if v2 {
		req.Header.Set("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	} else {
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}
