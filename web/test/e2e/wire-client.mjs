// A minimal keks-meet client written only from docs/PROTOCOL.md and the golden fixtures, with
// node:crypto and `ws`, sharing no code with the web client. Used by the wire-compatibility
// test: if the web client and this agree, both agree with the protocol, not just each other.

import { createCipheriv, createDecipheriv, pbkdf2Sync, randomBytes } from "node:crypto";
import WebSocket from "ws";

export function deriveRoom(secret) {
  const pw = Buffer.from(secret, "utf8");
  const key = pbkdf2Sync(pw, Buffer.from("keksmeet/cryptosaltAAA==", "base64"), 250000, 64, "sha512").subarray(0, 32);
  const hash = pbkdf2Sync(pw, Buffer.from("keksmeet/roomhashsaltA==", "base64"), 250000, 64, "sha512").subarray(0, 32).toString("hex");
  return { key, hash };
}

export function seal(key, plaintext) {
  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", key, iv);
  const ct = Buffer.concat([c.update(plaintext, "utf8"), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]).toString("base64");
}

export function open(key, sealed) {
  const raw = Buffer.from(sealed, "base64");
  const d = createDecipheriv("aes-256-gcm", key, raw.subarray(0, 12));
  d.setAuthTag(raw.subarray(raw.length - 16));
  return Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]).toString("utf8");
}

/** Connects, joins, identifies to everyone; collects decrypted messages in `inbox`. */
export async function connect(url, secret, username) {
  const { key, hash } = deriveRoom(secret);
  const ws = new WebSocket(url);
  const client = { id: null, members: new Set(), inbox: [], ws };
  const send = (obj) => ws.send(JSON.stringify(obj));
  client.say = (inner, recipient) => {
    const message = seal(key, JSON.stringify({ sender: client.id, inner }));
    send(recipient === undefined ? { relay: { message } } : { relay: { recipient, message } });
  };
  client.close = () => ws.close();
  await new Promise((resolve, reject) => {
    ws.on("error", reject);
    ws.on("message", (data) => {
      const p = JSON.parse(String(data));
      if (p.init) {
        client.id = p.init.your_id;
        send({ join: { hash } });
      } else if (p.client_join) {
        if (p.client_join.id === client.id) return resolve();
        client.members.add(p.client_join.id);
        client.say({ identify: { username } }, p.client_join.id);
      } else if (p.client_leave) client.members.delete(p.client_leave.id);
      else if (p.message) {
        try {
          const w = JSON.parse(open(key, p.message.message));
          if (w.sender !== p.message.sender) return;
          client.inbox.push({ from: w.sender, inner: w.inner });
        } catch {
          // not for us / garbage: ignore
        }
      }
    });
  });
  return client;
}
