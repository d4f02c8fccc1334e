/**
 * JSON ⇄ protobuf for the gRPC routes, from the .proto loaded at run time (no generated code).
 *
 * Input is checked field by field against the message type before anything is encoded:
 * protobufjs' own `fromObject` coerces (`"12abc"` → 12, `1.5` → 1, unknown keys dropped), and a
 * gateway must never forward a silently altered message. Field names are the .proto names
 * (`keepCase`), so `{"id": 121, "token": "a$$"}` maps to `VerifyRequest { id, token }`; a field's
 * JSON name (`firstName` for `first_name`, or its `json_name`) is taken too, as proto3 JSON asks
 * of a parser. Replies are written with the .proto names.
 */
import type protobuf from "protobufjs";

export interface FieldError {
  /** Dotted path of the offending field, e.g. `address.zip` or `tags[2]`. */
  field: string;
  message: string;
}

export interface TranscodeLimits {
  /** Deepest nesting of objects/arrays accepted. */
  maxDepth: number;
  /** Longest string value accepted, in UTF-16 code units. */
  maxStringLength: number;
}

export const DEFAULT_TRANSCODE_LIMITS: TranscodeLimits = { maxDepth: 32, maxStringLength: 64 * 1024 };

const INT32: [bigint, bigint] = [-(2n ** 31n), 2n ** 31n - 1n];
const UINT32: [bigint, bigint] = [0n, 2n ** 32n - 1n];
const INT64: [bigint, bigint] = [-(2n ** 63n), 2n ** 63n - 1n];
const UINT64: [bigint, bigint] = [0n, 2n ** 64n - 1n];
const INTEGER_RANGES: Record<string, [bigint, bigint]> = {
  int32: INT32,
  sint32: INT32,
  sfixed32: INT32,
  uint32: UINT32,
  fixed32: UINT32,
  int64: INT64,
  sint64: INT64,
  sfixed64: INT64,
  uint64: UINT64,
  fixed64: UINT64,
};
/** The same ranges as numbers, for a value that came as a safe integer: compared without a BigInt. */
const INTEGER_NUMBER_RANGES = new Map<[bigint, bigint], [number, number]>(
  [INT32, UINT32, INT64, UINT64].map((range) => [range, [Number(range[0]), Number(range[1])]]),
);
/**
 * Errors listed in one 400. The next error adds a last entry saying there were more, and the walk
 * stops there: a body of 100,000 bad keys costs what 21 do, not a 13 MB answer.
 */
export const MAX_FIELD_ERRORS = 20;
/**
 * proto3 JSON bytes, as Go's protojson reads them: the standard or the URL-safe alphabet (not both
 * in one string), padded to a multiple of 4 with `=` or not padded at all. Anything else —
 * a length of 1 mod 4, a stray or misplaced `=` — is refused here, as protobufjs' decoder would
 * otherwise throw at encode time or misread it.
 */
const BASE64 =
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$|^(?:[A-Za-z0-9\-_]{4})*(?:[A-Za-z0-9\-_]{2}(?:==)?|[A-Za-z0-9\-_]{3}=?)?$/;
/** Integer map keys, as protojson parses them: Go's ParseInt (optional sign) / ParseUint (digits only), base 10. */
const SIGNED_KEY = /^([+-]?)0*(\d{1,20})$/;
const UNSIGNED_KEY = /^()0*(\d{1,20})$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Longest field path, and client value, echoed in an error. */
const MAX_ECHO = 128;

/**
 * Checks `value` against `type`; returns the problems found (empty when it fits): at most
 * MAX_FIELD_ERRORS of them, then one `(body)` entry saying there were more. The value is then
 * safe to pass to `type.fromObject`: when it fits, any JSON names in it have been renamed, in
 * place, to the .proto names.
 */
export function checkMessage(
  type: protobuf.Type,
  value: unknown,
  limits: TranscodeLimits = DEFAULT_TRANSCODE_LIMITS,
): FieldError[] {
  const errors = scratchErrors;
  try {
    checkObject(type, value, "", 1, limits, errors);
  } finally {
    scratchErrors = errors.length === 0 ? errors : [];
  }
  return errors.length === 0 ? NO_ERRORS : errors;
}

/**
 * The list checkMessage collects into: one for every body that passes (the walk is synchronous,
 * so it is never shared), replaced once it is handed out with errors (bench/census.ts).
 */
let scratchErrors: FieldError[] = [];
const NO_ERRORS: FieldError[] = Object.freeze([]) as unknown as FieldError[];

/** Records one error, unless the list is full; the walkers stop once `errors.length > MAX_FIELD_ERRORS`. */
function report(errors: FieldError[], field: string, message: string): void {
  if (errors.length < MAX_FIELD_ERRORS) {
    // A hostile key can be as long as the body: echo a bounded prefix of the path.
    errors.push({ field: field.length > MAX_ECHO ? `${field.slice(0, MAX_ECHO)}…` : field, message });
  } else if (errors.length === MAX_FIELD_ERRORS) {
    errors.push({
      field: "(body)",
      message: `more than ${MAX_FIELD_ERRORS} errors; the rest of the body was not checked`,
    });
  }
}

/** A client's value, as an error message quotes it: a bounded prefix, never a whole structure. */
function echo(value: unknown): string {
  if (typeof value === "string")
    return value.length > MAX_ECHO ? `${JSON.stringify(value.slice(0, MAX_ECHO))}…` : JSON.stringify(value);
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

/** Names from the schema, as an error lists them: the first 16. */
function nameList(names: string[]): string {
  return names.length > 16 ? `${names.slice(0, 16).join(", ")}, … (${names.length} in all)` : names.join(", ");
}

function checkObject(
  type: protobuf.Type,
  value: unknown,
  path: string,
  depth: number,
  limits: TranscodeLimits,
  errors: FieldError[],
): void {
  if (depth > limits.maxDepth) {
    report(errors, path || "(body)", `nested deeper than ${limits.maxDepth} levels`);
    return;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    report(errors, path || "(body)", `must be a JSON object (${type.name})`);
    return;
  }
  // Made on the first field in a oneof: most messages have none (bench/census.ts).
  let oneofsSet: Map<string, string> | undefined;
  /** JSON names used, as [given, .proto name] pairs flattened: made on the first one (most bodies use none). */
  let renames: string[] | undefined;
  // for…in rather than Object.keys(): no key array per object (a parsed JSON object has no
  // inherited enumerable keys; hasOwn keeps it so should one appear).
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (errors.length > MAX_FIELD_ERRORS) return;
    const fieldPath = path ? `${path}.${key}` : key;
    let field = Object.hasOwn(type.fields, key) ? type.fields[key] : undefined;
    if (!field) {
      // proto3 JSON: a parser takes a field's JSON name (lowerCamelCase, or its json_name) as
      // well as its .proto name; the message is encoded with the .proto names, so it is renamed
      // once the walk is done. Both spellings at once would be one field given twice.
      const aliased = jsonNamesOf(type).get(key);
      if (aliased) {
        if (Object.hasOwn(value, aliased.name)) {
          report(errors, fieldPath, `the same field as ${aliased.name}, given twice`);
          continue;
        }
        (renames ??= []).push(key, aliased.name);
        field = aliased;
      }
    }
    if (!field) {
      // The known fields are named in the first such error for this type, not in every one.
      const head = `unknown field for ${type.name}`;
      const named = errors.some((e) => e.message.startsWith(`${head} (known:`));
      report(errors, fieldPath, named ? head : `${head} (known: ${nameList(Object.keys(type.fields))})`);
      continue;
    }
    const fieldValue = (value as Record<string, unknown>)[key];
    if (fieldValue === null) continue; // proto3 JSON: null means "the default value"
    if (field.partOf) {
      oneofsSet ??= new Map();
      const other = oneofsSet.get(field.partOf.name);
      if (other) report(errors, fieldPath, `only one of oneof "${field.partOf.name}" may be set (also got ${other})`);
      oneofsSet.set(field.partOf.name, key);
    }
    field.resolve();
    if (field.map) {
      const keyType = (field as unknown as protobuf.MapField).keyType;
      if (typeof fieldValue !== "object" || Array.isArray(fieldValue)) {
        report(errors, fieldPath, "must be a JSON object (map)");
        continue;
      }
      // Keys that spell one key differently ("1", "01", "+1") would be merged silently downstream.
      const seen = keyType === "string" ? undefined : new Map<string, string>();
      for (const [k, v] of Object.entries(fieldValue as Record<string, unknown>)) {
        if (errors.length > MAX_FIELD_ERRORS) return;
        const entryPath = `${fieldPath}.${k}`;
        if (seen) {
          const canonical = checkMapKey(keyType, k, entryPath, errors);
          if (canonical !== undefined) {
            const other = seen.get(canonical);
            if (other === undefined) seen.set(canonical, k);
            else report(errors, entryPath, `duplicate map key (the same ${keyType} key as ${echo(other)})`);
          }
        } else checkScalar("string", k, entryPath, limits, errors);
        checkValue(field, v, entryPath, depth + 1, limits, errors);
      }
    } else if (field.repeated) {
      if (!Array.isArray(fieldValue)) {
        report(errors, fieldPath, "must be a JSON array");
        continue;
      }
      if (depth + 1 > limits.maxDepth) {
        report(errors, fieldPath, `nested deeper than ${limits.maxDepth} levels`);
        continue;
      }
      for (let i = 0; i < fieldValue.length; i++) {
        if (errors.length > MAX_FIELD_ERRORS) return;
        checkValue(field, fieldValue[i], `${fieldPath}[${i}]`, depth + 1, limits, errors);
      }
    } else {
      checkValue(field, fieldValue, fieldPath, depth, limits, errors);
    }
  }
  if (renames && errors.length === 0) {
    const object = value as Record<string, unknown>;
    for (let i = 0; i < renames.length; i += 2) {
      object[renames[i + 1]!] = object[renames[i]!];
      delete object[renames[i]!];
    }
  }
}

const jsonNames = new WeakMap<protobuf.Type, Map<string, protobuf.Field>>();

/**
 * A message's fields by their JSON names, where those differ from the .proto names: `json_name`
 * when the .proto sets one, else protoc's lowerCamelCase (`first_name` → `firstName`). A JSON name
 * that is another field's .proto name is left out: the .proto name wins.
 */
function jsonNamesOf(type: protobuf.Type): Map<string, protobuf.Field> {
  let names = jsonNames.get(type);
  if (names) return names;
  names = new Map();
  for (const field of type.fieldsArray) {
    field.resolve();
    const declared = (field.options as Record<string, unknown> | undefined)?.json_name;
    const jsonName = typeof declared === "string" ? declared : field.jsonName;
    if (jsonName && jsonName !== field.name && !Object.hasOwn(type.fields, jsonName)) names.set(jsonName, field);
  }
  jsonNames.set(type, names);
  return names;
}

/**
 * A non-string map key, read as protojson reads it; returns the key's canonical spelling (so
 * aliases compare equal) or undefined after reporting why it is not a key of `type`.
 */
function checkMapKey(type: string, key: string, path: string, errors: FieldError[]): string | undefined {
  if (type === "bool") {
    if (key === "true" || key === "false") return key;
    report(errors, path, `must be true or false (bool map key); got ${echo(key)}`);
    return undefined;
  }
  const range = INTEGER_RANGES[type];
  if (!range) {
    report(errors, path, `unsupported map key type ${type}`);
    return undefined;
  }
  const parts = (range[0] === 0n ? UNSIGNED_KEY : SIGNED_KEY).exec(key);
  if (!parts) {
    report(errors, path, `must be an integer (${type}) map key; got ${echo(key)}`);
    return undefined;
  }
  const asBigInt = BigInt(`${parts[1] === "-" ? "-" : ""}${parts[2]}`);
  return inRange(type, range, asBigInt, path, errors) ? asBigInt.toString() : undefined;
}

function checkValue(
  field: protobuf.Field,
  value: unknown,
  path: string,
  depth: number,
  limits: TranscodeLimits,
  errors: FieldError[],
): void {
  const resolved = field.resolvedType;
  if (resolved && "fields" in resolved) {
    checkObject(resolved as protobuf.Type, value, path, depth + 1, limits, errors);
  } else if (resolved && "values" in resolved) {
    const enumType = resolved as protobuf.Enum;
    // proto3 enums are open: a number the .proto does not name is a value all the same (as
    // protojson reads it), passed on for the service to judge; a name must be one it declares.
    const ok =
      typeof value === "string"
        ? Object.hasOwn(enumType.values, value)
        : Number.isInteger(value) && (value as number) >= -(2 ** 31) && (value as number) < 2 ** 31;
    if (!ok) report(errors, path, `must be one of ${nameList(Object.keys(enumType.values))}, or an int32 number`);
  } else {
    checkScalar(field.type, value, path, limits, errors);
  }
}

/** Whether an integer fits its type's range; reports it when not. */
function inRange(
  type: string,
  [min, max]: [bigint, bigint],
  value: bigint,
  path: string,
  errors: FieldError[],
): boolean {
  if (value >= min && value <= max) return true;
  report(errors, path, `${value} is out of range for ${type} [${min}, ${max}]`);
  return false;
}

function checkScalar(type: string, value: unknown, path: string, limits: TranscodeLimits, errors: FieldError[]): void {
  const range = INTEGER_RANGES[type];
  if (range) {
    let asBigInt: bigint | undefined;
    if (typeof value === "number" && Number.isInteger(value)) {
      if (!Number.isSafeInteger(value)) {
        report(errors, path, `${value} loses precision as a JSON number; send it as a string`);
        return;
      }
      // A safe integer is compared as a number (exact: the bounds are integers, and those past
      // 2^53 round to a power of two no safe integer reaches); a BigInt only for the error.
      const [min, max] = INTEGER_NUMBER_RANGES.get(range)!;
      if (value >= min && value <= max) return;
      asBigInt = BigInt(value);
    } else if (typeof value === "string" && /^-?\d{1,20}$/.test(value)) asBigInt = BigInt(value);
    if (asBigInt === undefined) report(errors, path, `must be an integer (${type}); got ${echo(value)}`);
    else inRange(type, range, asBigInt, path, errors);
    return;
  }
  switch (type) {
    case "double":
    case "float":
      if (!(typeof value === "number" || value === "NaN" || value === "Infinity" || value === "-Infinity")) {
        report(errors, path, `must be a number (${type})`);
      } else if (typeof value === "number" && !Number.isFinite(value)) {
        // JSON.parse turns 1e999 into Infinity; proto3 JSON spells infinity as the string "Infinity".
        report(errors, path, `is out of range for ${type} (write "Infinity" or "-Infinity" as a string)`);
      } else if (type === "float" && typeof value === "number" && !Number.isFinite(Math.fround(value))) {
        // Judged on the 32-bit value: 3.4028235e38 (FLT_MAX as usually written) rounds to FLT_MAX.
        report(errors, path, `${value} is out of range for float (it rounds to Infinity)`);
      }
      return;
    case "bool":
      if (typeof value !== "boolean") report(errors, path, "must be true or false");
      return;
    case "string":
      if (typeof value !== "string") report(errors, path, `must be a string; got ${typeof value}`);
      else if (value.length > limits.maxStringLength)
        report(errors, path, `longer than ${limits.maxStringLength} characters`);
      else if (LONE_SURROGATE.test(value)) report(errors, path, "is not valid Unicode (lone surrogate)");
      return;
    case "bytes":
      if (typeof value !== "string") report(errors, path, `must be a base64 string; got ${typeof value}`);
      else if (value.length > limits.maxStringLength)
        report(errors, path, `longer than ${limits.maxStringLength} characters`);
      else if (!BASE64.test(value))
        report(errors, path, "must be base64 (standard or URL-safe alphabet, padded to a multiple of 4 or unpadded)");
      return;
    default:
      report(errors, path, `unsupported field type ${type}`);
  }
}

/** Options for turning replies into JSON: 64-bit integers as strings (JS numbers lose them), enums by name. */
export const REPLY_TO_JSON: protobuf.IConversionOptions = {
  longs: String,
  enums: String,
  bytes: String,
  defaults: true,
  json: true,
};
