/**
 * What a failed TLS connection to an upstream is told as, the same on both transports
 * (proxy/h1-client.ts, grpc/h2-client.ts): the cause Bun gives, and the likely meaning of a
 * connection the upstream closes right after the handshake. With TLS 1.3 the client's handshake is
 * over before the server has seen the client certificate, so a refusal of it comes as a close (Bun
 * reports no alert for an unknown CA or an expired certificate) or an alert just after.
 */

/**
 * `err`'s code and message, as a connect error tells them: "CERT_HAS_EXPIRED certificate has
 * expired" (the code left out when the message names it); `separator` between the two.
 */
export function errorText(err: Error, separator = " "): string {
  const code = (err as { code?: string }).code;
  return code && !err.message.includes(code) ? `${code}${separator}${err.message}` : err.message;
}

/** Why the handshake failed: why the gateway refused the upstream's certificate, when Bun says. */
export function handshakeFailure(err: Error | null): string {
  return err
    ? `the TLS handshake with the upstream failed: ${errorText(err)}`
    : "the TLS handshake with the upstream failed";
}

/** An upstream that closed the connection right after the handshake (`when`: " without answering"…), the gateway presenting a client certificate. */
export function clientCertRefused(when: string): string {
  return `the upstream closed the TLS connection right after the handshake${when}: it may have refused the gateway's client certificate (is it signed by a CA the upstream trusts, still valid, and issued for client authentication?)`;
}

/** The upstream's alert said it requires a client certificate, and the gateway presents none. */
export const CLIENT_CERT_MISSING =
  "the upstream requires a client certificate (mutual TLS) and the gateway presents none: give the upstream's tls block a cert and key";

/** Whether a TLS error is that alert. */
export function isCertificateRequired(err: Error): boolean {
  return /CERTIFICATE_REQUIRED/.test(errorText(err));
}
