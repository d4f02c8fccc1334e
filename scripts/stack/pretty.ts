/**
 * Human-readable log lines for `make dev`: the services always write JSON; this turns a line
 * into `14:02:03 INFO  gateway-1  request  status=201 route=projects …`. It is a pipe, not a mode
 * of the services (so what runs locally is byte-for-byte what runs in the cluster).
 */
const COLORS = [
  "\x1b[36m",
  "\x1b[35m",
  "\x1b[33m",
  "\x1b[32m",
  "\x1b[34m",
  "\x1b[96m",
  "\x1b[95m",
  "\x1b[93m",
  "\x1b[92m",
];
const LEVEL_COLORS: Record<string, string> = {
  fatal: "\x1b[41m",
  error: "\x1b[31m",
  warn: "\x1b[33m",
  info: "\x1b[32m",
  debug: "\x1b[90m",
  trace: "\x1b[90m",
};
const RESET = "\x1b[0m";
const HIDDEN = new Set(["level", "time", "msg", "service", "version", "instance", "pid", "hostname", "span_id"]);

export function colorFor(index: number): string {
  return COLORS[index % COLORS.length]!;
}

export function prettyLine(name: string, color: string, line: string, useColor: boolean): string {
  const prefix = useColor ? `${color}${name.padEnd(10)}${RESET}` : name.padEnd(10);
  if (!line.startsWith("{")) return `${prefix} ${line}`;
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `${prefix} ${line}`;
  }
  const time = typeof record.time === "string" ? record.time.slice(11, 19) : "";
  const level = String(record.level ?? "info");
  const levelText = level.toUpperCase().padEnd(5);
  const fields = Object.entries(record)
    .filter(([k]) => !HIDDEN.has(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(" ");
  const levelShown = useColor ? `${LEVEL_COLORS[level] ?? ""}${levelText}${RESET}` : levelText;
  return `${time} ${levelShown} ${prefix} ${String(record.msg ?? "")} ${fields}`;
}
