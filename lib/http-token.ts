/**
 * An HTTP token (RFC 9110 §5.6.2: one or more `tchar`), what a header name and a `Connection`
 * option are: as a pattern for the JSON Schemas of routes.yaml, and as a RegExp for code.
 */
export const HTTP_TOKEN_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
export const HTTP_TOKEN = new RegExp(HTTP_TOKEN_PATTERN);
