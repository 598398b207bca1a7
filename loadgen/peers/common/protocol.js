'use strict';
// Protocol v1 (SPEC.md §2) parsing and validation shared by the comparison peers.
// No dependencies, so both peers can require it with a relative path.

const MAX_MESSAGE = 64 * 1024; // bytes of one client message
const MAX_CHANNEL = 256; // bytes of UTF-8
const MAX_SUBSCRIPTIONS = 1024; // per connection
const OUTBOUND_LIMIT = 1024 * 1024; // bytes queued per connection before slow-consumer close
const PING_INTERVAL_MS = 25 * 1000;

// C0, DEL and C1 control characters.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function errorFrame(code, message, extra) {
  const e = { type: 'error', code, message };
  if (extra) {
    if (extra.id !== undefined) e.id = extra.id;
    if (extra.channel !== undefined) e.channel = extra.channel;
  }
  return JSON.stringify(e);
}

function validChannel(c) {
  return (
    typeof c === 'string' &&
    c.length > 0 &&
    c.length <= MAX_CHANNEL && // cheap upper bound: UTF-8 bytes >= UTF-16 units
    Buffer.byteLength(c, 'utf8') <= MAX_CHANNEL &&
    !CONTROL.test(c) &&
    c.isWellFormed() // no lone surrogates (they cannot be encoded as UTF-8)
  );
}

// Parse one client text message. Returns either
//   { error: <error frame string> }                       (reply and carry on), or
//   { type, channel, data?, id?, hasId }                  (a valid request).
// `byteLength` is the size of the raw frame.
function parseRequest(text, byteLength) {
  if (byteLength > MAX_MESSAGE) {
    return { error: errorFrame('too_large', `message larger than ${MAX_MESSAGE} bytes`) };
  }
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (_) {
    return { error: errorFrame('bad_json', 'message is not valid JSON') };
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    return { error: errorFrame('bad_request', 'message must be a JSON object') };
  }
  const hasId = Object.prototype.hasOwnProperty.call(msg, 'id');
  const id = msg.id;
  if (hasId && typeof id !== 'string' && !(typeof id === 'number' && Number.isFinite(id))) {
    return { error: errorFrame('bad_request', '"id" must be a string or a number') };
  }
  const extra = hasId ? { id } : undefined;
  const type = msg.type;
  if (typeof type !== 'string') {
    return { error: errorFrame('bad_request', 'missing "type"', extra) };
  }
  if (type !== 'subscribe' && type !== 'unsubscribe' && type !== 'publish') {
    return { error: errorFrame('unknown_type', `unknown type ${JSON.stringify(type.slice(0, 64))}`, extra) };
  }
  const channel = msg.channel;
  if (!validChannel(channel)) {
    const ex = { id: hasId ? id : undefined, channel: typeof channel === 'string' ? channel : undefined };
    return {
      error: errorFrame(
        'bad_channel',
        `channel must be 1-${MAX_CHANNEL} bytes of UTF-8 without control characters`,
        ex,
      ),
    };
  }
  if (type === 'publish') {
    if (!Object.prototype.hasOwnProperty.call(msg, 'data')) {
      return { error: errorFrame('bad_request', 'publish needs "data"', { id: extra && id, channel }) };
    }
    return { type, channel, data: msg.data, id, hasId };
  }
  return { type, channel, id, hasId };
}

// What goes into Redis for a publish (the seed's behaviour: re-encoded with JSON.stringify).
function encodePublish(data) {
  return JSON.stringify(data);
}

// The part of a delivery frame before the payload; computed once per channel.
function deliveryPrefix(channel) {
  return '{"channel":' + JSON.stringify(channel) + ',"data":';
}

// A Redis payload as the "data" member: verbatim if it is valid JSON, else a JSON string.
function payloadAsData(payload) {
  try {
    JSON.parse(payload);
    return payload;
  } catch (_) {
    return JSON.stringify(payload);
  }
}

module.exports = {
  MAX_MESSAGE,
  MAX_CHANNEL,
  MAX_SUBSCRIPTIONS,
  OUTBOUND_LIMIT,
  PING_INTERVAL_MS,
  errorFrame,
  validChannel,
  parseRequest,
  encodePublish,
  deliveryPrefix,
  payloadAsData,
};
