package consensus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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

func (NodeUp) Type() CommandType        { return CmdNodeUp }
func (NodeGone) Type() CommandType      { return CmdNodeGone }
func (PresenceJoin) Type() CommandType  { return CmdPresenceJoin }
func (PresenceLeave) Type() CommandType { return CmdPresenceLeave }
func (Occupancy) Type() CommandType     { return CmdOccupancy }

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
	switch v := c.(type) {
	case PresenceJoin:
		v.UserID, v.UserInfo = compact(v.UserID), compact(v.UserInfo)
		c = v
	case PresenceLeave:
		v.UserID = compact(v.UserID)
		c = v
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	if 1+len(body) > MaxCommandSize {
		return nil, fmt.Errorf("encode %s: %w: %d bytes", c.Type(), ErrBadCommand, 1+len(body))
	}
	return append([]byte{byte(c.Type())}, body...), nil
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
	var (
		c   Command
		err error
	)
	body := b[1:]
	switch t := CommandType(b[0]); t {
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

// compact normalises a raw JSON value; invalid JSON is returned unchanged
// and rejected by validation.
func compact(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	return buf.Bytes()
}
