package redisadapter

import "github.com/redis/go-redis/v9"

// The shared state in Redis. Every key of one app carries the hash tag
// {<app>}, so that each script touches one slot (Redis Cluster runs a
// script on one node); an app's state is never spread over shards.
//
//	<kp>nodes                  hash  node → heartbeat deadline (unix ms)
//	<kp>node-apps:<node>       set   apps in which node has entries (a hint for the reaper)
//	<kp>{app}:channels         set   occupied channels
//	<kp>{app}:subs:<ch>        hash  node → that node's subscriptions of ch
//	<kp>{app}:members:<ch>     hash  user key → user_info (the first join's)
//	<kp>{app}:mcount:<ch>      hash  user key → nodes the user is connected on
//	<kp>{app}:mnodes:<ch>      hash  node "\n" user key → 1
//	<kp>{app}:node:<node>      set   channels in which node has entries
//	<kp>{app}:sockets          hash  node → its connections of the app
//
// A node writes only its own entries, as absolute values (a count, a
// member present or not), so a write can be repeated after an unknown
// outcome and a resync from local truth always converges. Transitions
// (first subscriber anywhere, a user's first connection anywhere, and
// their reverses) are decided inside the scripts, atomically, so exactly
// one node sees each and announces it.
type keys struct{ prefix string }

func (k keys) nodes() string                 { return k.prefix + "nodes" }
func (k keys) nodeApps(node string) string   { return k.prefix + "node-apps:" + node }
func (k keys) app(app string) string         { return k.prefix + "{" + app + "}:" }
func (k keys) channels(app string) string    { return k.app(app) + "channels" }
func (k keys) subs(app, ch string) string    { return k.app(app) + "subs:" + ch }
func (k keys) members(app, ch string) string { return k.app(app) + "members:" + ch }
func (k keys) mcount(app, ch string) string  { return k.app(app) + "mcount:" + ch }
func (k keys) mnodes(app, ch string) string  { return k.app(app) + "mnodes:" + ch }
func (k keys) nodeIdx(app, node string) string {
	return k.app(app) + "node:" + node
}
func (k keys) sockets(app string) string { return k.app(app) + "sockets" }

// setCount writes a node's subscription count of a channel and reports
// the channel's transition: 1 occupied, -1 vacated, 0 neither.
// KEYS: subs, channels, nodeIdx. ARGV: node, count, channel.
var setCount = redis.NewScript(`
local before = redis.call('HLEN', KEYS[1])
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], n)
  redis.call('SADD', KEYS[3], ARGV[3])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local after = redis.call('HLEN', KEYS[1])
if before == 0 and after > 0 then
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
if before > 0 and after == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
  return -1
end
return 0`)

// joinMember records a user's connection on a node and reports whether it
// added the user to the channel ({1, info}), refused it at max ({-1}), or
// changed nothing ({0, info}).
// KEYS: members, mcount, mnodes, nodeIdx. ARGV: node, user, info, max, channel.
var joinMember = redis.NewScript(`
local f = ARGV[1] .. '\n' .. ARGV[2]
if redis.call('HEXISTS', KEYS[3], f) == 1 then
  return {0, redis.call('HGET', KEYS[1], ARGV[2]) or ''}
end
local added = 0
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  local max = tonumber(ARGV[4])
  if max > 0 and redis.call('HLEN', KEYS[1]) >= max then
    return {-1, ''}
  end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  added = 1
end
redis.call('HSET', KEYS[3], f, 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('SADD', KEYS[4], ARGV[5])
return {added, redis.call('HGET', KEYS[1], ARGV[2])}`)

// leaveMember removes a user's connection on a node and reports whether
// that removed the user from the channel ({1, info}) or not ({0, ”}).
// KEYS: members, mcount, mnodes. ARGV: node, user.
var leaveMember = redis.NewScript(`
local f = ARGV[1] .. '\n' .. ARGV[2]
if redis.call('HDEL', KEYS[3], f) == 0 then
  return {0, ''}
end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  local info = redis.call('HGET', KEYS[1], ARGV[2]) or ''
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[1], ARGV[2])
  return {1, info}
end
return {0, ''}`)

// reapApp removes every entry of a dead node in one app and returns what
// that changed: {"v", channel} for a vacated channel, {"c", channel} for
// one whose count fell, {"m", channel, user, info} for a removed member.
// KEYS: nodeIdx, channels, sockets. ARGV: node, app key prefix ("<kp>{app}:").
var reapApp = redis.NewScript(`
local out = {}
local node, p = ARGV[1], ARGV[2]
for _, ch in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local subs = p .. 'subs:' .. ch
  if redis.call('HDEL', subs, node) == 1 then
    if redis.call('HLEN', subs) == 0 then
      redis.call('SREM', KEYS[2], ch)
      table.insert(out, {'v', ch})
    else
      table.insert(out, {'c', ch})
    end
  end
  local mnodes, mcount, members = p .. 'mnodes:' .. ch, p .. 'mcount:' .. ch, p .. 'members:' .. ch
  local cursor = '0'
  repeat
    local r = redis.call('HSCAN', mnodes, cursor, 'MATCH', node .. '\n*', 'COUNT', 200)
    cursor = r[1]
    for i = 1, #r[2], 2 do
      local f = r[2][i]
      local user = string.sub(f, #node + 2)
      redis.call('HDEL', mnodes, f)
      if redis.call('HINCRBY', mcount, user, -1) <= 0 then
        local info = redis.call('HGET', members, user) or ''
        redis.call('HDEL', mcount, user)
        redis.call('HDEL', members, user)
        table.insert(out, {'m', ch, user, info})
      end
    end
  until cursor == '0'
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], node)
return out`)
