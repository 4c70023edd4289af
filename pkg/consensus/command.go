package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/soketi-go/soketi/internal/jsonx"
)

// CommandType is byte 0 of every log entry; the rest is the command as JSON.
type CommandType uint8

const (
	CmdNodeUp        CommandType = 1
	CmdNodeGone      CommandType = 2
	CmdPresenceJoin  CommandType = 3
	CmdPresenceLeave CommandType = 4
	CmdOccupancy     CommandType = 5
	CmdHooksSent     CommandType = 6
	CmdBatch         CommandType = 7
)

func (t CommandType) String() string {
	switch t {
	case CmdNodeUp:
		return "node_up"
	case CmdNodeGone:
		return "node_gone"
	case CmdPresenceJoin:
		return "presence_join"
	case CmdPresenceLeave:
		return "presence_leave"
	case CmdOccupancy:
		return "occupancy"
	case CmdHooksSent:
		return "hooks_sent"
	case CmdBatch:
		return "batch"
	}
	return fmt.Sprintf("command_%d", uint8(t))
}

// Size limits enforced by DecodeCommand. They bound what one log entry can
// add to the replicated state; pusher enforces tighter, user-facing limits.
const (
	MaxCommandSize  = 64 << 10
	maxNameLen      = 256 // app id, channel name, node id
	maxUserIDLen    = 1024
	maxUserInfoSize = 32 << 10
	// MaxBatchCommands caps the sub-commands of one Batch.
	MaxBatchCommands = 1024
)

var (
	// ErrBadCommand is returned for log data that is not a valid command.
	ErrBadCommand = errors.New("consensus: malformed command")
)

// Command is one of the typed commands below.
type Command interface {
	Type() CommandType
	validate() error
}

// NodeUp registers a node at an incarnation (its process start). A larger
// incarnation than the recorded one means the node restarted: every entry of
// its previous life is purged.
type NodeUp struct {
	Node        string `json:"node"`
	Incarnation uint64 `json:"incarnation"`
}

// NodeGone purges every entry of a node and forgets it. Incarnation, when
// non-zero, must match the recorded one, so a verdict about a previous life
// never purges a restarted node.
type NodeGone struct {
	Node        string `json:"node"`
	Incarnation uint64 `json:"incarnation,omitempty"`
}

// PresenceJoin records that a node has a socket of a user in a presence
// channel (its first; repeating it changes nothing). MaxMembers, when set,
// is the app's member limit, decided at commit so that joins racing on
// several nodes cannot pass it together.
type PresenceJoin struct {
	App         string          `json:"app"`
	Channel     string          `json:"channel"`
	UserID      json.RawMessage `json:"user_id"`
	UserInfo    json.RawMessage `json:"user_info,omitempty"`
	Node        string          `json:"node"`
	Incarnation uint64          `json:"incarnation"`
	MaxMembers  int             `json:"max_members,omitempty"`
}

// PresenceLeave records that a node has no socket of a user left in a
// presence channel (repeating it changes nothing).
type PresenceLeave struct {
	App         string          `json:"app"`
	Channel     string          `json:"channel"`
	UserID      json.RawMessage `json:"user_id"`
	Node        string          `json:"node"`
	Incarnation uint64          `json:"incarnation"`
}

// Occupancy reports a node's own 0↔1 transition of local subscribers in a
// channel. Nodes propose transitions, not every subscription.
type Occupancy struct {
	App         string `json:"app"`
	Channel     string `json:"channel"`
	Node        string `json:"node"`
	Incarnation uint64 `json:"incarnation"`
	Occupied    bool   `json:"occupied"`
}

// Batch is one node's group commit: presence joins, leaves and occupancy
// changes applied in order in one log entry, each as if it had an entry of
// its own, with its own Result (Result.Batch). Other commands, batches
// included, cannot be batched.
type Batch struct {
	Commands []Command
}

// batchJSON is a Batch on the wire: each sub-command's type, then its JSON.
type batchJSON struct {
	Commands []batchItem `json:"commands"`
}

type batchItem struct {
	Type    CommandType     `json:"type"`
	Command json.RawMessage `json:"command"`
}

// Batchable reports whether commands of type t may go in a Batch.
func Batchable(t CommandType) bool {
	return t == CmdPresenceJoin || t == CmdPresenceLeave || t == CmdOccupancy
}

func (NodeUp) Type() CommandType        { return CmdNodeUp }
func (NodeGone) Type() CommandType      { return CmdNodeGone }
func (PresenceJoin) Type() CommandType  { return CmdPresenceJoin }
func (PresenceLeave) Type() CommandType { return CmdPresenceLeave }
func (Occupancy) Type() CommandType     { return CmdOccupancy }
func (Batch) Type() CommandType         { return CmdBatch }

func (c NodeUp) validate() error {
	if err := checkName("node", c.Node); err != nil {
		return err
	}
	if c.Incarnation == 0 {
		return fmt.Errorf("%w: zero incarnation", ErrBadCommand)
	}
	return nil
}

func (c NodeGone) validate() error { return checkName("node", c.Node) }

func (c PresenceJoin) validate() error {
	if err := checkChannel(c.App, c.Channel, c.Node); err != nil {
		return err
	}
	if err := checkUserID(c.UserID); err != nil {
		return err
	}
	if len(c.UserInfo) > maxUserInfoSize {
		return fmt.Errorf("%w: user_info over %d bytes", ErrBadCommand, maxUserInfoSize)
	}
	if len(c.UserInfo) > 0 && !json.Valid(c.UserInfo) {
		return fmt.Errorf("%w: user_info is not JSON", ErrBadCommand)
	}
	return nil
}

func (c PresenceLeave) validate() error {
	if err := checkChannel(c.App, c.Channel, c.Node); err != nil {
		return err
	}
	return checkUserID(c.UserID)
}

func (c Occupancy) validate() error { return checkChannel(c.App, c.Channel, c.Node) }

func (c Batch) validate() error {
	if err := checkBatchLen(len(c.Commands)); err != nil {
		return err
	}
	for i, sub := range c.Commands {
		if err := checkBatchable(i, sub); err != nil {
			return err
		}
		if err := sub.validate(); err != nil {
			return fmt.Errorf("batch command %d: %w", i, err)
		}
	}
	return nil
}

func checkBatchLen(n int) error {
	if n == 0 || n > MaxBatchCommands {
		return fmt.Errorf("%w: batch of %d commands, want 1..%d", ErrBadCommand, n, MaxBatchCommands)
	}
	return nil
}

func checkBatchable(i int, sub Command) error {
	if sub == nil {
		return fmt.Errorf("%w: batch command %d is nil", ErrBadCommand, i)
	}
	if !Batchable(sub.Type()) {
		return fmt.Errorf("%w: batch command %d: %s cannot be batched", ErrBadCommand, i, sub.Type())
	}
	return nil
}

// encode returns the JSON of c, each sub-command normalised as
// EncodeCommand does alone, so that a user's key is the same either way.
func (c Batch) encode() ([]byte, error) {
	if err := checkBatchLen(len(c.Commands)); err != nil {
		return nil, err
	}
	w := batchJSON{Commands: make([]batchItem, 0, len(c.Commands))}
	for i, sub := range c.Commands {
		if err := checkBatchable(i, sub); err != nil {
			return nil, err
		}
		body, err := encodeBody(sub)
		if err != nil {
			return nil, fmt.Errorf("batch command %d: %w", i, err)
		}
		w.Commands = append(w.Commands, batchItem{Type: sub.Type(), Command: body})
	}
	return jsonx.Marshal(w)
}

// decodeBatch parses a Batch's JSON. Its size is bounded by
// MaxCommandSize, and so is what it allocates; a batch inside a batch is
// refused before it is parsed.
func decodeBatch(body []byte) (Command, error) {
	w, err := decodeAs[batchJSON](body)
	if err != nil {
		return nil, err
	}
	if err := checkBatchLen(len(w.Commands)); err != nil {
		return nil, err
	}
	b := Batch{Commands: make([]Command, 0, len(w.Commands))}
	for i, it := range w.Commands {
		if !Batchable(it.Type) {
			return nil, fmt.Errorf("%w: batch command %d: %s cannot be batched", ErrBadCommand, i, it.Type)
		}
		sub, err := decodeBody(it.Type, it.Command)
		if err != nil {
			return nil, fmt.Errorf("batch command %d: %w", i, err)
		}
		b.Commands = append(b.Commands, sub)
	}
	return b, nil
}

func checkName(field, s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("%w: %s must be 1..%d bytes", ErrBadCommand, field, maxNameLen)
	}
	return nil
}

func checkChannel(app, channel, node string) error {
	for _, f := range [...]struct{ name, v string }{{"app", app}, {"channel", channel}, {"node", node}} {
		if err := checkName(f.name, f.v); err != nil {
			return err
		}
	}
	return nil
}

func checkUserID(id json.RawMessage) error {
	if len(id) == 0 || len(id) > maxUserIDLen || !json.Valid(id) {
		return fmt.Errorf("%w: user_id must be a JSON value of at most %d bytes", ErrBadCommand, maxUserIDLen)
	}
	return nil
}

// EncodeCommand returns the log data for c: its type byte, then JSON.
// User ids are compacted so that equal JSON values get equal keys.
func EncodeCommand(c Command) ([]byte, error) {
	body, err := encodeBody(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	if 1+len(body) > MaxCommandSize {
		return nil, fmt.Errorf("encode %s: %w: %d bytes", c.Type(), ErrBadCommand, 1+len(body))
	}
	return append([]byte{byte(c.Type())}, body...), nil
}

// encodeBody normalises and validates c and returns its JSON.
func encodeBody(c Command) ([]byte, error) {
	switch v := c.(type) {
	case PresenceJoin:
		v.UserID, v.UserInfo = compact(v.UserID), compact(v.UserInfo)
		c = v
	case PresenceLeave:
		v.UserID = compact(v.UserID)
		c = v
	case Batch:
		return v.encode()
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	// Without HTML escaping: user ids keep the form they are keyed by.
	return jsonx.Marshal(c)
}

// DecodeCommand parses log data. It never panics; any input that
// EncodeCommand could not have produced is an ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	if len(b) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCommand, len(b))
	}
	return decodeBody(CommandType(b[0]), b[1:])
}

// decodeBody parses and validates the JSON of a command of type t.
func decodeBody(t CommandType, body []byte) (Command, error) {
	var (
		c   Command
		err error
	)
	switch t {
	case CmdNodeUp:
		c, err = decodeAs[NodeUp](body)
	case CmdNodeGone:
		c, err = decodeAs[NodeGone](body)
	case CmdPresenceJoin:
		var v PresenceJoin
		v, err = decodeAs[PresenceJoin](body)
		v.UserID, v.UserInfo = compact(v.UserID), compact(v.UserInfo)
		c = v
	case CmdPresenceLeave:
		var v PresenceLeave
		v, err = decodeAs[PresenceLeave](body)
		v.UserID = compact(v.UserID)
		c = v
	case CmdOccupancy:
		c, err = decodeAs[Occupancy](body)
	case CmdHooksSent:
		c, err = decodeAs[HooksSent](body)
	case CmdBatch:
		return decodeBatch(body) // it validates each sub-command
	default:
		return nil, fmt.Errorf("%w: unknown type %d", ErrBadCommand, uint8(t))
	}
	if err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeAs[T any](body []byte) (T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if dec.More() {
		return v, fmt.Errorf("%w: trailing data", ErrBadCommand)
	}
	return v, nil
}

// compact gives a user id (or info) the one form it is keyed by; see
// jsonx.Canonical. Invalid JSON is returned unchanged and rejected by
// validation.
func compact(raw json.RawMessage) json.RawMessage { return jsonx.Canonical(raw) }
