// Open-model latency probe: N requests to one endpoint at a constant arrival rate.
//
// The k6 counterpart of readiness.prober (warm mode), so the two can be compared on the
// same endpoint at the same rate and n. A constant-arrival-rate executor starts
// iteration i at i / RATE seconds whatever earlier requests are doing (open model);
// each iteration sends exactly one GET. Every request is tagged with its sequence number
// (`seq`), and the server-reported duration (`Server-Timing: app;dur=<ms>`) of each
// response is added to the custom Trend `server_timing_app` with the same tag, so the
// raw points of `--out json=...` can be paired request by request. No thresholds: the
// comparison is computed from the raw points, not from k6's summary.
//
// Environment (pass with `-e NAME=value`; PATH in particular, since k6 would otherwise
// see the shell's search path under that name):
//   BASE_URL   required, e.g. http://127.0.0.1:28401
//   PATH       required, URL path starting with "/", e.g. /api/documents
//   RATE       requests per second (default 2)
//   N          number of requests (default 200); iterations beyond N send nothing
//   DURATION   k6 duration string (default N / RATE seconds, which starts N + 1
//              iterations, the last of which is skipped)
//   PRE_VUS    pre-allocated VUs (default 2: at low rates few VUs keep each VU's
//              keep-alive connection busy enough not to be closed by the server)
//   MAX_VUS    VUs k6 may add when requests overlap (default RATE * 10 s, at least PRE_VUS)
//   TIMEOUT    per-request timeout (default 10s)
//   START_AT   optional epoch milliseconds: setup() waits until then, so the first
//              request leaves at a known moment (to run beside another prober on a
//              known phase offset)

import http from 'k6/http';
import exec from 'k6/execution';
import { Trend } from 'k6/metrics';
import { sleep } from 'k6';

function required(name) {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function positiveNumber(name, fallback) {
  const raw = __ENV[name];
  const value = raw === undefined || raw === '' ? fallback : Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive number, got ${raw}`);
  }
  return value;
}

const BASE_URL = required('BASE_URL').replace(/\/+$/, '');
const PATH = required('PATH');
if (!PATH.startsWith('/') || PATH.includes(':/')) {
  throw new Error(`PATH must be a URL path starting with "/" (pass it with -e PATH=/route), got ${PATH}`);
}
const RATE = positiveNumber('RATE', 2);
const N = Math.floor(positiveNumber('N', 200));
const DURATION = __ENV.DURATION || `${Math.ceil((N / RATE) * 1000)}ms`;
const PRE_VUS = Math.floor(positiveNumber('PRE_VUS', 2));
const MAX_VUS = Math.max(PRE_VUS, Math.floor(positiveNumber('MAX_VUS', Math.ceil(RATE * 10))));
const TIMEOUT = __ENV.TIMEOUT || '10s';
const START_AT = __ENV.START_AT ? positiveNumber('START_AT', 0) : 0;
const URL = `${BASE_URL}${PATH}`;
const SERVER_TIMING_APP = /(?:^|,)\s*app\s*;[^,]*?\bdur=([0-9]+(?:\.[0-9]+)?)/i;

const serverTiming = new Trend('server_timing_app', true);

export const options = {
  discardResponseBodies: true,
  thresholds: {},
  // setup() may wait for START_AT; give it that long plus k6's default minute.
  setupTimeout: `${Math.ceil(Math.max(0, START_AT - Date.now()) / 1000) + 60}s`,
  scenarios: {
    probe: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: PRE_VUS,
      maxVUs: MAX_VUS,
    },
  },
};

export function setup() {
  const wait = START_AT - Date.now();
  if (wait > 0) {
    sleep(wait / 1000);
  }
}

export default function () {
  const seq = exec.scenario.iterationInTest;
  if (seq >= N) {
    return;
  }
  const tags = { seq: String(seq) };
  const res = http.get(URL, { tags, timeout: TIMEOUT, headers: { 'X-Trace-Id': `k6-probe-${seq}` } });
  const match = SERVER_TIMING_APP.exec(res.headers['Server-Timing'] || '');
  if (match) {
    serverTiming.add(Number(match[1]), tags);
  }
}
