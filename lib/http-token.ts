/**
 * An HTTP token (RFC 9110 §5.6.2: one or more `tchar`), what a header name and a `Connection`
 * option are. The JSON Schemas of routes.yaml spell the same pattern as a string.
 */
export const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
