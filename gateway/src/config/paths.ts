/**
 * Where a file that routes.yaml names is (a proto, a certificate, a key, a JWT key file): as given
 * when absolute; when relative, from the working directory if it is there, else from the routes
 * file's own folder — so `proto/userverify.proto` is the checkout's under `make dev`, and a file
 * beside a mounted routes.yaml is found in the cluster.
 */
import { existsSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";

export function configFilePath(fileDir: string, path: string): string {
  return isAbsolute(path) ? path : resolve(configFileDir(fileDir, path), path);
}

/** The folder a relative `path` is taken from: the working directory if the file is there, else `fileDir`. */
export function configFileDir(fileDir: string, path: string): string {
  return existsSync(resolve(path)) ? process.cwd() : fileDir;
}
