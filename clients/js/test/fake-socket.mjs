// A stand-in for the browser WebSocket, driven by the unit tests: they play the server.

/** A fresh fake WebSocket class with its own list of instances. */
export function makeFakeSocket() {
  class FakeSocket {
    static instances = [];
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeSocket.instances.push(this);
    }
    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // ---- the test plays the server ----
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    receive(msg) {
      this.onmessage?.({ data: typeof msg === "string" ? msg : JSON.stringify(msg) });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    /** Frames sent of one type. */
    sentOf(type) {
      return this.sent.filter((f) => f.type === type);
    }
    static get last() {
      return FakeSocket.instances[FakeSocket.instances.length - 1];
    }
  }
  return FakeSocket;
}

/** Lets pending promise callbacks and async steps run. */
export function flush() {
  return new Promise((r) => setImmediate(r));
}

/** An unsigned-looking JWT whose payload has this exp (the client never verifies). */
export function fakeJwt(payload) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(payload)}.sig`;
}
