/**
 * `make certs`: the local CA and every certificate `TLS=1 make dev` uses, in TLS_DIR (`.data/tls`),
 * issuing only what is missing, close to expiry, short of a name or not the pair of its key
 * (scripts/tls/pki.ts). EDGE_HOSTS adds names to the gateway's HTTPS certificate (comma-separated
 * DNS names, e.g. a LAN host name): a certificate without one of them is reissued.
 */
import { relative, resolve } from "node:path";
import { REPO_ROOT } from "../stack/stack.ts";
import { ensureLocalPki, localIdentities } from "./pki.ts";

const dir = resolve(REPO_ROOT, process.env.TLS_DIR || ".data/tls");
const edgeHosts = (process.env.EDGE_HOSTS ?? "")
  .split(",")
  .map((h) => h.trim())
  .filter(Boolean);
const pki = await ensureLocalPki(dir, localIdentities({ edgeHosts }));
const shown = relative(process.cwd(), dir) || ".";
console.log(
  pki.issued.length
    ? `${shown}: issued ${pki.issued.join(", ")}`
    : `${shown}: every certificate is present, has its names, matches its key and is valid for more than 7 days; nothing issued`,
);
console.log(`trust it with: curl --cacert ${relative(process.cwd(), pki.caFile)} https://localhost:8443/…`);
console.log("renew: delete a .crt (or the whole folder) and run make certs again");
