/**
 * Where a file that routes.yaml names is (a proto, a certificate, a key, a JWT key file): as given
 * when absolute; when relative, from the working directory if it is there, else from the routes
 * file's own folder — so `proto/userverify.proto` is the checkout's under `make dev`, and a file
 * beside a mounted routes.yaml is found in the cluster.
 */
import { existsSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";

export function configFilePath(fileDir: string, path: string): string {
  if (isAbsolute(path)) return path;
  const fromWorkingDir = resolve(path);
  return existsSync(fromWorkingDir) ? fromWorkingDir : resolve(fileDir, path);
}
