'use strict';
// The peer of lark-bridge's benchmark (deploy/bench/run): what a user would
// pick instead, the official Node SDK's EventDispatcher behind Node's own
// http server, decrypting and verifying the same events as the ingress.
//
//   node deploy/bench/node-peer.js --listen 127.0.0.1:18284 \
//       --encrypt-key KEY --verification-token TOKEN
//
// The SDK is @larksuiteoapi/node-sdk, installed by deploy/bench/run with npm
// into .sandbox/bench/node (found through NODE_PATH). Requests go through the
// SDK's own adapter for Node's http server (`adaptDefault`: it reads the body,
// answers url_verification, checks X-Lark-Signature and decrypts); the only
// change is in the answer: when the SDK refuses an event (a signature that
// does not match: it returns nothing and would answer 200 with an empty body)
// this server answers 401, as the ingress does, so the load generator can
// count refusals. The handler of im.message.receive_v1 answers the event's
// message_id, which proves that the event was decrypted.
//
// It stops by itself after --max-lifetime seconds (default 1800).

const http = require('http');
const lark = require('@larksuiteoapi/node-sdk');

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const listen = arg('listen', '127.0.0.1:18284');
const encryptKey = arg('encrypt-key', '');
const verificationToken = arg('verification-token', '');
const path = arg('path', '/lark/bench/events');
const maxLifetime = Number(arg('max-lifetime', '1800'));
if (!encryptKey) {
    console.error('node-peer: --encrypt-key is required (the benchmark measures encrypted, signed events)');
    process.exit(2);
}
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];
if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host)) {
    console.error(`node-peer: ${listen} is not a loopback address`);
    process.exit(2);
}

const dispatcher = new lark.EventDispatcher({
    encryptKey,
    verificationToken,
    loggerLevel: lark.LoggerLevel.error,
}).register({
    'im.message.receive_v1': async (data) => ({ message_id: data.message.message_id }),
});

const adapter = lark.adaptDefault(path, dispatcher, { autoChallenge: true });

const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== path) {
        res.statusCode = 404;
        res.end('{"error":"not found"}');
        return;
    }
    const end = res.end.bind(res);
    res.end = (body, ...rest) => {
        res.setHeader('Content-Type', 'application/json');
        if (body === undefined) {
            // The SDK refused the event (signature mismatch): it returned nothing.
            res.statusCode = 401;
            return end('{"error":"signature"}');
        }
        return end(body, ...rest);
    };
    adapter(req, res).catch((e) => {
        res.statusCode = 500;
        end(JSON.stringify({ error: String(e) }));
    });
});

server.listen(port, host.replace(/^\[|\]$/g, ''), () => {
    console.error(`node-peer: @larksuiteoapi/node-sdk EventDispatcher on http://${listen}${path} (node ${process.version})`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, maxLifetime * 1000).unref();
