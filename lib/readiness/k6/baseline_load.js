// Phase 2 baseline load: an open-model arrival-rate scenario, then a closed-model VU scenario.
//
// `arrival` (constant-arrival-rate): iteration i starts at i / RATE seconds whatever the
// earlier requests are doing, for DURATION_S seconds, from a fixed pool of VUS virtual
// users (preAllocatedVUs = maxVUs, so the load never grows past the approved concurrency;
// an iteration that finds no free VU is dropped and counted in `dropped_iterations`).
// Each iteration sends one GET to TARGETS[i % TARGETS.length], so the critical routes share
// the rate evenly. Exactly PLANNED = ceil(RATE × DURATION_S) iterations send a request:
// k6 may or may not start one more at t = DURATION_S exactly, and that one sends nothing,
// which makes the request count deterministic — also across execution segments, since
// `iterationInTest` numbers iterations over the whole test, segmented or not.
//
// `vus` (constant-vus): VU_VUS virtual users loop over the same targets for VU_DURATION_S
// seconds, pausing THINK_S between requests. Run in the same process as `arrival`, it
// starts once the arrival scenario's graceful stop is over, so the two pools never have
// requests in flight at the same time (the audit runs it as a process of its own instead,
// started when the arrival process has exited).
//
// In flight: every request carries TIMEOUT_S as its timeout (k6's own default is 60 s, far
// past what the audit's client accepts), so a VU waits at most that long for an answer and
// at most VUS (then VU_VUS) requests are ever in flight — a hanging target holds VUs, it
// does not make k6 open more connections; iterations that find no free VU are dropped and
// counted. Each scenario's gracefulStop is TIMEOUT_S + 1 s: an iteration is one request,
// done or timed out by then.
//
// Every request is tagged with `app`, `route` (the route's name) and `seq`, carries
// X-Trace-Id `<RUN>-<scenario>-<seq>` (so its telemetry event can be found) and the
// synthetic identity's headers. Just before it leaves, the counter `requests_sent` gets a
// point with the same tags: a request that has one and no `http_req_duration` point was
// still in flight when k6 was stopped (k6 aborts those and writes no point for them).
// Thresholds come verbatim from THRESHOLDS; the audit's verdicts are computed from the raw
// points, not from k6's summary.
//
// Environment (pass with `-e NAME=value`):
//   TARGETS      required, JSON list of {"app", "route", "url"} (absolute GET URLs)
//   RUN          required, run token: prefix of every trace id
//   SCENARIOS    comma-separated subset of arrival,vus (default both)
//   RATE         iterations per second of `arrival` (default 10; fractional allowed)
//   DURATION_S   seconds of `arrival` (default 10);  VUS  its VU pool (default 10)
//   VU_VUS, VU_DURATION_S   the `vus` scenario (defaults 5 and 10)
//   THINK_S      pause between a `vus` VU's requests, seconds (default 0.5; 0 for none)
//   THRESHOLDS   JSON object {metric: [expression, ...]} (default none)
//   TAGS         JSON object of synthetic tags sent as X-<Tag> headers
//   IDENTITY     synthetic identity (default test_student_e2e_01)
//   TIMEOUT_S    per-request timeout in seconds (default 10)

import http from 'k6/http';
import exec from 'k6/execution';
import { sleep } from 'k6';
import { Counter } from 'k6/metrics';

function required(name) {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function number(name, fallback, allowZero) {
  const raw = __ENV[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !allowZero)) {
    throw new Error(`${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${raw}`);
  }
  return value;
}

function json(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  try {
    return JSON.parse(raw);
  } catch (e) {
    throw new Error(`${name} must be JSON: ${e.message}`);
  }
}

const TARGETS = json('TARGETS', null);
if (!Array.isArray(TARGETS) || TARGETS.length === 0
    || TARGETS.some((t) => !t || !t.app || !t.route || !/^https?:\/\//.test(t.url || ''))) {
  throw new Error('TARGETS must be a non-empty JSON list of {"app", "route", "url"} with absolute URLs');
}
const RUN = required('RUN');
const SCENARIOS = (__ENV.SCENARIOS || 'arrival,vus').split(',').map((s) => s.trim()).filter((s) => s);
if (SCENARIOS.length === 0 || SCENARIOS.some((s) => s !== 'arrival' && s !== 'vus')) {
  throw new Error(`SCENARIOS must name arrival and/or vus, got ${__ENV.SCENARIOS}`);
}
const RATE = number('RATE', 10, false);
const DURATION_S = number('DURATION_S', 10, false);
const VUS = Math.floor(number('VUS', 10, false));
const VU_VUS = Math.floor(number('VU_VUS', 5, false));
const VU_DURATION_S = number('VU_DURATION_S', 10, false);
const THINK_S = number('THINK_S', 0.5, true);
const THRESHOLDS = json('THRESHOLDS', {});
const TAGS = json('TAGS', {});
const IDENTITY = __ENV.IDENTITY || 'test_student_e2e_01';
const TIMEOUT_MS = Math.round(number('TIMEOUT_S', 10, false) * 1000);
const GRACE_MS = TIMEOUT_MS + 1000;
const sent = new Counter('requests_sent');
const PLANNED = Math.ceil(RATE * DURATION_S - 1e-9);
// k6 takes an integer rate per time unit: a fractional rate becomes a rate per 1000 s.
const WHOLE = Number.isInteger(RATE);

const scenarios = {};
if (SCENARIOS.includes('arrival')) {
  scenarios.arrival = {
    executor: 'constant-arrival-rate', rate: WHOLE ? RATE : Math.round(RATE * 1000),
    timeUnit: WHOLE ? '1s' : '1000s', duration: `${Math.round(DURATION_S * 1000)}ms`,
    preAllocatedVUs: VUS, maxVUs: VUS, gracefulStop: `${GRACE_MS}ms`, exec: 'arrival',
  };
}
if (SCENARIOS.includes('vus')) {
  scenarios.vus = {
    executor: 'constant-vus', vus: VU_VUS, duration: `${Math.round(VU_DURATION_S * 1000)}ms`,
    gracefulStop: `${GRACE_MS}ms`, exec: 'closed',
    startTime: SCENARIOS.includes('arrival') ? `${Math.round(DURATION_S * 1000) + GRACE_MS}ms` : '0s',
  };
}

export const options = { discardResponseBodies: true, thresholds: THRESHOLDS, scenarios };

function headerName(tag) {
  return 'X-' + tag.split('_').map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join('-');
}

const SYNTHETIC_HEADERS = Object.fromEntries([
  ...Object.entries(TAGS).map(([k, v]) => [headerName(k), String(v)]),
  ['X-Synthetic-Identity', IDENTITY],
]);

function request(scenario, seq) {
  const target = TARGETS[seq % TARGETS.length];
  const tags = { app: target.app, route: target.route, seq: String(seq) };
  sent.add(1, tags);
  http.get(target.url, {
    timeout: `${TIMEOUT_MS}ms`,
    tags,
    headers: { ...SYNTHETIC_HEADERS, 'X-Trace-Id': `${RUN}-${scenario}-${seq}` },
  });
}

export function arrival() {
  const seq = exec.scenario.iterationInTest;
  if (seq < PLANNED) {
    request('arrival', seq);
  }
}

export function closed() {
  request('vus', exec.scenario.iterationInTest);
  if (THINK_S > 0) {
    sleep(THINK_S);
  }
}
