// rate-limiter-flexible's documented login-protection pattern ("Login endpoint protection" in its
// wiki): a slow brute-force limiter per address (100 failures a day) and a consecutive-failures
// limiter per name + address (10 in 90 days, blocked for an hour), both in memory, run over a
// trace attempt by attempt on trace time (Date.now is the attempt's time). The directory's
// answer is the event's truth. Prints one JSON line.
//
// usage: node login.js TRACE.jsonl [SECONDS]
'use strict';
const fs = require('fs');
const zlib = require('zlib');
const { RateLimiterMemory } = require('rate-limiter-flexible');

const [, , tracePath, secondsArg] = process.argv;
const seconds = Number(secondsArg || 5);
let raw = fs.readFileSync(tracePath);
if (tracePath.endsWith('.gz')) raw = zlib.gunzipSync(raw);
const events = raw
  .toString('utf8')
  .split('\n')
  .filter((l) => l.trim().startsWith('{'))
  .map((l) => JSON.parse(l))
  .map((e) => ({
    ts: Date.parse(e.ts),
    user: e.user,
    ip: e.ip,
    truth: e.truth,
  }))
  .sort((a, b) => a.ts - b.ts);
const WEEK = 7 * 24 * 3600 * 1000;
const span = events[events.length - 1].ts - events[0].ts + 1;
const period = Math.ceil(span / WEEK) * WEEK;

// Trace time, not wall time.
let now = events[0].ts;
Date.now = () => now;

const maxWrongAttemptsByIPperDay = 100;
const maxConsecutiveFailsByUsernameAndIP = 10;
const limiterSlowBruteByIP = new RateLimiterMemory({
  keyPrefix: 'login_fail_ip_per_day',
  points: maxWrongAttemptsByIPperDay,
  duration: 60 * 60 * 24,
  blockDuration: 60 * 60 * 24,
});
const limiterConsecutiveFailsByUsernameAndIP = new RateLimiterMemory({
  keyPrefix: 'login_fail_consecutive_username_and_ip',
  points: maxConsecutiveFailsByUsernameAndIP,
  duration: 60 * 60 * 24 * 90,
  blockDuration: 60 * 60,
});
const getUsernameIPkey = (username, ip) => `${username}_${ip}`;

// The documented route, with the directory's answer from the trace.
async function login(ev) {
  const ipAddr = ev.ip;
  const usernameIPkey = getUsernameIPkey(ev.user.trim().toLowerCase(), ipAddr);
  const [resUsernameAndIP, resSlowByIP] = await Promise.all([
    limiterConsecutiveFailsByUsernameAndIP.get(usernameIPkey),
    limiterSlowBruteByIP.get(ipAddr),
  ]);
  let retrySecs = 0;
  if (resSlowByIP !== null && resSlowByIP.consumedPoints > maxWrongAttemptsByIPperDay) {
    retrySecs = Math.round(resSlowByIP.msBeforeNext / 1000) || 1;
  } else if (
    resUsernameAndIP !== null &&
    resUsernameAndIP.consumedPoints > maxConsecutiveFailsByUsernameAndIP
  ) {
    retrySecs = Math.round(resUsernameAndIP.msBeforeNext / 1000) || 1;
  }
  if (retrySecs > 0) return 'blocked';
  const loggedIn = ev.truth === 'correct';
  const exists = ev.truth !== 'unknown_user';
  if (!loggedIn) {
    try {
      const promises = [limiterSlowBruteByIP.consume(ipAddr)];
      if (exists) promises.push(limiterConsecutiveFailsByUsernameAndIP.consume(usernameIPkey));
      await Promise.all(promises);
    } catch (rlRejected) {
      if (rlRejected instanceof Error) throw rlRejected;
      return 'blocked';
    }
    return 'failed';
  }
  if (resUsernameAndIP !== null && resUsernameAndIP.consumedPoints > 0) {
    await limiterConsecutiveFailsByUsernameAndIP.delete(usernameIPkey);
  }
  return 'ok';
}

async function main() {
  // Warm-up: one pass.
  let base = 0;
  for (const ev of events) {
    now = base + ev.ts;
    await login(ev);
  }
  base += period;
  let n = 0;
  let blocked = 0;
  const t = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < seconds) {
    for (const ev of events) {
      now = base + ev.ts;
      if ((await login(ev)) === 'blocked') blocked++;
    }
    n += events.length;
    base += period;
    elapsed = Number(process.hrtime.bigint() - t) / 1e9;
  }
  console.log(
    JSON.stringify({
      bench: 'rate-limiter-flexible login pattern, memory',
      version: require('rate-limiter-flexible/package.json').version,
      node: process.version,
      attempts: n,
      blocked,
      seconds: elapsed,
      attempts_per_second: Math.round(n / elapsed),
    }),
  );
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
