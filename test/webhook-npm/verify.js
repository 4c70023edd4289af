// Verifies one webhook request with the official pusher package.
//
// Usage: node verify.js APP_ID KEY SECRET < request.json
// where request.json is {"headers": {name: value, ...}, "body": "<raw body>"}.
// Prints {"valid": bool, "time_ms": n, "events": [...]} on stdout.
"use strict"

const Pusher = require("pusher")

const [appId, key, secret] = process.argv.slice(2)
if (!appId || !key || !secret) {
  console.error("usage: node verify.js APP_ID KEY SECRET < request.json")
  process.exit(2)
}

let input = ""
process.stdin.setEncoding("utf8")
process.stdin.on("data", (chunk) => (input += chunk))
process.stdin.on("end", () => {
  const req = JSON.parse(input)
  const headers = {}
  for (const [name, value] of Object.entries(req.headers || {})) {
    headers[name.toLowerCase()] = value
  }
  const pusher = new Pusher({ appId, key, secret })
  const webhook = pusher.webhook({ headers, rawBody: req.body })
  const out = { valid: webhook.isValid() }
  if (out.valid) {
    out.time_ms = webhook.getTime().getTime()
    out.events = webhook.getEvents()
  }
  process.stdout.write(JSON.stringify(out) + "\n")
})
