/**
 * The gRPC contracts, loaded at run time from the .proto text — never from generated code.
 *
 * The .proto files under `proto/` are imported as text, so Bun embeds them in a
 * `bun build --compile` binary: `protoLoader.loadSync(path)` would look for a file that a clean
 * image does not have (see docs/design.md, "Known traps"). A file that exists on disk wins over the
 * embedded copy, so a gateway can be pointed at a proto shipped in a ConfigMap.
 *
 * Parsing needs protobufjs only; what grpc-js needs (package definitions) is in lib/grpc-proto.ts,
 * so the gateway, which speaks gRPC with its own client, does not load grpc-js at start-up.
 */
import { existsSync, readFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import protobuf from "protobufjs";
import healthProto from "../proto/grpc/health/v1/health.proto" with { type: "text" };
import userverifyProto from "../proto/userverify.proto" with { type: "text" };

/** Every proto shipped in the repository, by its path relative to `proto/`. */
export const EMBEDDED_PROTOS: Readonly<Record<string, string>> = {
  "userverify.proto": userverifyProto,
  "grpc/health/v1/health.proto": healthProto,
};

export class ProtoLoadError extends Error {
  override name = "ProtoLoadError";
}

/** Maps "proto/userverify.proto", "./proto/x.proto" or "userverify.proto" to its embedded key. */
function embeddedKey(file: string): string {
  return file.replace(/^(\.\/)?(proto\/)?/, "");
}

function readProtoSource(file: string, baseDir: string): { name: string; text: string } {
  const onDisk = isAbsolute(file) ? file : resolve(baseDir, file);
  if (existsSync(onDisk)) return { name: onDisk, text: readFileSync(onDisk, "utf8") };
  const key = embeddedKey(file);
  const text = EMBEDDED_PROTOS[key];
  if (text === undefined) {
    throw new ProtoLoadError(
      `proto file "${file}" not found on disk (${onDisk}) nor among the embedded protos (${Object.keys(EMBEDDED_PROTOS).join(", ")})`,
    );
  }
  return { name: key, text };
}

/** Parses proto files (and their imports) into one protobufjs Root. */
export function parseProtos(files: readonly string[], baseDir = process.cwd()): protobuf.Root {
  const root = new protobuf.Root();
  const seen = new Set<string>();
  const visit = (file: string, dir: string) => {
    const { name, text } = readProtoSource(file, dir);
    if (seen.has(name)) return;
    seen.add(name);
    let parsed: protobuf.IParserResult;
    try {
      parsed = protobuf.parse(text, root, { keepCase: true });
    } catch (err) {
      throw new ProtoLoadError(`cannot parse ${name}: ${(err as Error).message}`);
    }
    for (const dep of [...(parsed.imports ?? []), ...(parsed.weakImports ?? [])]) {
      // protojson spells the well-known types its own way (a Timestamp is an RFC 3339 string, a
      // wrapper its bare value), which the gateway's transcoding does not: refused by name.
      if (dep.startsWith("google/protobuf/"))
        throw new ProtoLoadError(
          `${name} imports ${dep}: the well-known types (google.protobuf.*) are not supported by the gateway's JSON transcoding; use plain fields (e.g. int64 seconds, string)`,
        );
      // Imports are relative to the proto root (`proto/`), as protoc resolves them.
      visit(dep, dir);
    }
  };
  for (const file of files) visit(file, baseDir);
  root.resolveAll();
  return root;
}
