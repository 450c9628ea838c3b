package bitrix

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// MaxBatch is the most commands one batch call may carry.
const MaxBatch = 50

// BatchCmd is one command of a batch. Key names its result; an empty Key
// becomes the command's position. Params are encoded like
// http_build_query; a value may refer to an earlier result as
// "$result[key][FIELD]".
type BatchCmd struct {
	Key    string
	Method string
	Params any
}

// BatchResult holds the outcome of every command by key: Results for those
// that succeeded, Errors for those that failed. With halt set, commands
// after the first failure appear in neither.
type BatchResult struct {
	Results map[string]json.RawMessage
	Errors  map[string]*APIError
	Total   map[string]int64
	Next    map[string]int64
}

// Decode unmarshals the result of the command key into v. It returns the
// command's *APIError if it failed, and an error if it has no result.
func (r *BatchResult) Decode(key string, v any) error {
	if e, ok := r.Errors[key]; ok {
		return e
	}
	raw, ok := r.Results[key]
	if !ok {
		return fmt.Errorf("bitrix: batch: no result for %q", key)
	}
	return json.Unmarshal(raw, v)
}

// Batch runs up to MaxBatch commands in one request, which counts once
// against the portal's rate limit. With halt, the portal stops at the first
// failing command. Batch uses the OAuth grant for every command.
func (c *Client) Batch(ctx context.Context, cmds []BatchCmd, halt bool) (*BatchResult, error) {
	if len(cmds) > MaxBatch {
		return nil, fmt.Errorf("bitrix: batch: %d commands, at most %d allowed", len(cmds), MaxBatch)
	}
	res := &BatchResult{Results: map[string]json.RawMessage{}, Errors: map[string]*APIError{}, Total: map[string]int64{}, Next: map[string]int64{}}
	if len(cmds) == 0 {
		return res, nil
	}
	methods := make(map[string]string, len(cmds))
	// The cmd object is written by hand: the portal runs commands in the
	// order of its keys, and $result references depend on that order,
	// which a Go map would lose.
	var body bytes.Buffer
	body.WriteString(`{"halt":`)
	if halt {
		body.WriteString("1")
	} else {
		body.WriteString("0")
	}
	body.WriteString(`,"cmd":{`)
	for i, cmd := range cmds {
		key := cmd.Key
		if key == "" {
			key = strconv.Itoa(i)
		}
		if _, dup := methods[key]; dup {
			return nil, fmt.Errorf("bitrix: batch: duplicate key %q", key)
		}
		if cmd.Method == "" || strings.ContainsAny(cmd.Method, "?&/#") || strings.EqualFold(cmd.Method, "batch") {
			return nil, fmt.Errorf("bitrix: batch: invalid method %q for %q", cmd.Method, key)
		}
		methods[key] = cmd.Method
		q, err := EncodeQuery(cmd.Params)
		if err != nil {
			return nil, fmt.Errorf("bitrix: batch: %s: %w", key, err)
		}
		k, _ := json.Marshal(key)
		v, _ := json.Marshal(cmd.Method + "?" + q)
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(k)
		body.WriteByte(':')
		body.Write(v)
	}
	body.WriteString("}}")

	var raw struct {
		Result      json.RawMessage `json:"result"`
		ResultError json.RawMessage `json:"result_error"`
		ResultTotal json.RawMessage `json:"result_total"`
		ResultNext  json.RawMessage `json:"result_next"`
	}
	if err := c.Call(ctx, "batch", json.RawMessage(body.Bytes()), &raw); err != nil {
		return nil, err
	}
	var errs map[string]struct {
		Error            flexString `json:"error"`
		ErrorDescription flexString `json:"error_description"`
	}
	var totals, nexts map[string]flexInt
	for _, d := range []struct {
		raw json.RawMessage
		v   any
	}{{raw.Result, &res.Results}, {raw.ResultError, &errs}, {raw.ResultTotal, &totals}, {raw.ResultNext, &nexts}} {
		if err := decodeObject(d.raw, d.v); err != nil {
			return nil, fmt.Errorf("bitrix: batch: decode result: %w", err)
		}
	}
	if res.Results == nil {
		res.Results = map[string]json.RawMessage{}
	}
	for k, e := range errs {
		res.Errors[k] = &APIError{Method: methods[k], Code: string(e.Error), Description: string(e.ErrorDescription)}
	}
	for k, v := range totals {
		res.Total[k] = int64(v)
	}
	for k, v := range nexts {
		res.Next[k] = int64(v)
	}
	return res, nil
}
