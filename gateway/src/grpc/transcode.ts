/**
 * JSON ⇄ protobuf for the gRPC routes, from the .proto loaded at run time (no generated code).
 *
 * Input is checked field by field against the message type before anything is encoded:
 * protobufjs' own `fromObject` coerces (`"12abc"` → 12, `1.5` → 1, unknown keys dropped), and a
 * gateway must never forward a silently altered message. Field names are the .proto names
 * (`keepCase`), so `{"id": 121, "token": "a$$"}` maps to `VerifyRequest { id, token }`.
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
const BASE64 = /^[A-Za-z0-9+/\-_]*={0,2}$/;
/** Largest finite 32-bit float: a larger JSON number would be encoded as Infinity. */
const FLOAT_MAX = 3.4028234663852886e38;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Checks `value` against `type`; returns every problem found (empty when it fits). The value
 * is then safe to pass to `type.fromObject` unchanged.
 */
export function checkMessage(
  type: protobuf.Type,
  value: unknown,
  limits: TranscodeLimits = DEFAULT_TRANSCODE_LIMITS,
): FieldError[] {
  const errors: FieldError[] = [];
  checkObject(type, value, "", 1, limits, errors);
  return errors;
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
    errors.push({ field: path || "(body)", message: `nested deeper than ${limits.maxDepth} levels` });
    return;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    errors.push({ field: path || "(body)", message: `must be a JSON object (${type.name})` });
    return;
  }
  const oneofsSet = new Map<string, string>();
  for (const key of Object.keys(value)) {
    const fieldPath = path ? `${path}.${key}` : key;
    const field = Object.hasOwn(type.fields, key) ? type.fields[key] : undefined;
    if (!field) {
      // A hostile key can be as long as the body: echo a bounded prefix of it.
      const named = fieldPath.length > 128 ? `${fieldPath.slice(0, 128)}…` : fieldPath;
      errors.push({
        field: named,
        message: `unknown field for ${type.name} (known: ${Object.keys(type.fields).join(", ")})`,
      });
      continue;
    }
    const fieldValue = (value as Record<string, unknown>)[key];
    if (fieldValue === null) continue; // proto3 JSON: null means "the default value"
    if (field.partOf) {
      const other = oneofsSet.get(field.partOf.name);
      if (other)
        errors.push({
          field: fieldPath,
          message: `only one of oneof "${field.partOf.name}" may be set (also got ${other})`,
        });
      oneofsSet.set(field.partOf.name, key);
    }
    field.resolve();
    if (field.map) {
      const mapField = field as unknown as protobuf.MapField;
      if (typeof fieldValue !== "object" || Array.isArray(fieldValue)) {
        errors.push({ field: fieldPath, message: "must be a JSON object (map)" });
        continue;
      }
      for (const [k, v] of Object.entries(fieldValue as Record<string, unknown>)) {
        if (mapField.keyType !== "string") checkScalar(mapField.keyType, k, `${fieldPath}.${k}`, limits, errors, true);
        checkValue(field, v, `${fieldPath}.${k}`, depth + 1, limits, errors);
      }
    } else if (field.repeated) {
      if (!Array.isArray(fieldValue)) {
        errors.push({ field: fieldPath, message: "must be a JSON array" });
        continue;
      }
      if (depth + 1 > limits.maxDepth) {
        errors.push({ field: fieldPath, message: `nested deeper than ${limits.maxDepth} levels` });
        continue;
      }
      fieldValue.forEach((item, i) => {
        checkValue(field, item, `${fieldPath}[${i}]`, depth + 1, limits, errors);
      });
    } else {
      checkValue(field, fieldValue, fieldPath, depth, limits, errors);
    }
  }
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
    const ok =
      typeof value === "string"
        ? Object.hasOwn(enumType.values, value)
        : Number.isInteger(value) && Object.values(enumType.values).includes(value as number);
    if (!ok) errors.push({ field: path, message: `must be one of ${Object.keys(enumType.values).join(", ")}` });
  } else {
    checkScalar(field.type, value, path, limits, errors, false);
  }
}

function checkScalar(
  type: string,
  value: unknown,
  path: string,
  limits: TranscodeLimits,
  errors: FieldError[],
  isMapKey: boolean,
): void {
  const range = INTEGER_RANGES[type];
  if (range) {
    let asBigInt: bigint | undefined;
    if (typeof value === "number" && Number.isInteger(value)) {
      if (!Number.isSafeInteger(value)) {
        errors.push({ field: path, message: `${value} loses precision as a JSON number; send it as a string` });
        return;
      }
      asBigInt = BigInt(value);
    } else if (typeof value === "string" && /^-?\d{1,20}$/.test(value)) asBigInt = BigInt(value);
    if (asBigInt === undefined) {
      errors.push({
        field: path,
        message: `must be an integer (${type})${isMapKey ? " map key" : ""}; got ${JSON.stringify(value)}`,
      });
    } else if (asBigInt < range[0] || asBigInt > range[1]) {
      errors.push({ field: path, message: `${asBigInt} is out of range for ${type} [${range[0]}, ${range[1]}]` });
    }
    return;
  }
  switch (type) {
    case "double":
    case "float":
      if (!(typeof value === "number" || value === "NaN" || value === "Infinity" || value === "-Infinity")) {
        errors.push({ field: path, message: `must be a number (${type})` });
      } else if (typeof value === "number" && !Number.isFinite(value)) {
        // JSON.parse turns 1e999 into Infinity; proto3 JSON spells infinity as the string "Infinity".
        errors.push({
          field: path,
          message: `is out of range for ${type} (write "Infinity" or "-Infinity" as a string)`,
        });
      } else if (type === "float" && typeof value === "number" && Math.abs(value) > FLOAT_MAX) {
        errors.push({ field: path, message: `${value} is out of range for float` });
      }
      return;
    case "bool":
      if (typeof value !== "boolean" && !(isMapKey && (value === "true" || value === "false")))
        errors.push({ field: path, message: "must be true or false" });
      return;
    case "string":
      if (typeof value !== "string") errors.push({ field: path, message: `must be a string; got ${typeof value}` });
      else if (value.length > limits.maxStringLength)
        errors.push({ field: path, message: `longer than ${limits.maxStringLength} characters` });
      else if (LONE_SURROGATE.test(value))
        errors.push({ field: path, message: "is not valid Unicode (lone surrogate)" });
      return;
    case "bytes":
      if (typeof value !== "string" || !BASE64.test(value))
        errors.push({ field: path, message: "must be a base64 string" });
      else if (value.length > limits.maxStringLength)
        errors.push({ field: path, message: `longer than ${limits.maxStringLength} characters` });
      return;
    default:
      errors.push({ field: path, message: `unsupported field type ${type}` });
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
