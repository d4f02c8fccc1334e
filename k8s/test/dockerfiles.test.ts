/**
 * The three Dockerfiles, read without a Docker engine (there is none here): valid syntax, a
 * pinned multi-stage build that compiles the right entry point into the binary the image runs,
 * a distroless nonroot runtime with nothing else in it, the ports the Deployment uses, and a
 * build context (.dockerignore) that holds every file the service imports and nothing more.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join, posix } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import { validate as lintDockerfile } from "dockerfile-utils";
import {
  BUILD_INPUTS,
  bytecodeOrderFile,
  compileFlags,
  dockerfileOf,
  RUNTIME_BASE_DIGEST,
  SERVICES,
} from "../../scripts/cluster/images.ts";
import {
  argsOf,
  byKeyword,
  execForm,
  flagsOf,
  importClosure,
  isInBuildContext,
  stagesOf,
} from "./checks/dockerfiles.ts";
import { loadManifests, REPO_ROOT } from "./checks/manifests.ts";

const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const dockerignore = readFileSync(join(REPO_ROOT, ".dockerignore"), "utf8");
const deployments = loadManifests()
  .filter((m) => m.object.kind === "Deployment")
  .map((m) => m.object as unknown as IDeployment);

describe.each([...SERVICES])("%s/Dockerfile", (service) => {
  const file = dockerfileOf(service);
  const text = readFileSync(join(REPO_ROOT, file), "utf8");
  const stages = stagesOf(text);
  const [build, runtime] = [stages[0]!, stages.at(-1)!];
  const deployment = deployments.find((d) => d.metadata?.name === service)!;
  const container = deployment.spec!.template.spec!.containers[0]!;

  test("has no syntax errors or warnings (dockerfile-utils, the VS Code Docker linter)", () => {
    expect(lintDockerfile(text).map((d) => `${file}:${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  test("is two stages: a build on the Bun package.json pins, a distroless cc nonroot runtime pinned by digest", () => {
    expect(stages.length).toBe(2);
    expect(build.from.getImageName()).toBe("oven/bun");
    expect(build.from.getImageTag()).toBe(packageJson.devDependencies.bun!);
    expect(build.from.getImageTag()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(build.name).toBeTruthy();
    expect(`${runtime.from.getRegistry()}/${runtime.from.getImageName()}:${runtime.from.getImageTag()}`).toBe(
      "gcr.io/distroless/cc-debian12:nonroot",
    );
    // `nonroot` moves with every Debian update: the digest is what makes a rebuild the image reviewed.
    expect(runtime.from.getImageDigest()).toBe(RUNTIME_BASE_DIGEST);
  });

  test("installs from the lockfile without devDependencies and compiles src/main.ts with --compile --bytecode --format=esm and its bytecode order", () => {
    const runs = byKeyword(build, "RUN").map(argsOf);
    expect(runs).toContainEqual(["bun", "install", "--frozen-lockfile", "--production"]);
    const compileAt = build.instructions.findIndex(
      (i) => i.getKeyword() === "RUN" && argsOf(i)[0] === "bun" && argsOf(i)[1] === "build",
    );
    expect(compileAt).toBeGreaterThan(-1);
    const compile = argsOf(build.instructions[compileAt]!);
    expect(compile).toEqual(
      expect.arrayContaining([...compileFlags(service), `${service}/src/main.ts`, "--outfile", `/out/${service}`]),
    );
    expect(existsSync(join(REPO_ROOT, service, "src/main.ts"))).toBe(true);
    // The order file is read by that RUN: it must be in the build context and copied before it.
    const order = bytecodeOrderFile(service);
    expect(existsSync(join(REPO_ROOT, order))).toBe(true);
    expect(isInBuildContext(order, dockerignore)).toBe(true);
    expect(
      build.instructions
        .slice(0, compileAt)
        .filter((i) => i.getKeyword() === "COPY")
        .flatMap((c) => argsOf(c).slice(0, -1))
        .some((c) => order.startsWith(c)),
    ).toBe(true);
  });

  test("runs, as numeric non-root user 65532, exactly the binary it compiled, and nothing needs a shell", () => {
    const copies = byKeyword(runtime, "COPY");
    const binary = copies.find((c) => flagsOf(c).from === build.name && argsOf(c)[0] === `/out/${service}`);
    expect(binary).toBeDefined();
    const destination = argsOf(binary!).at(-1)!;
    const workdir = argsOf(byKeyword(runtime, "WORKDIR").at(-1)!)[0]!;
    const entrypoint = execForm(byKeyword(runtime, "ENTRYPOINT").at(-1)!);
    expect(entrypoint).toEqual([posix.resolve(workdir, destination)]);
    expect(entrypoint).toEqual([`/app/${service}`]);
    expect(argsOf(byKeyword(runtime, "USER").at(-1)!)).toEqual(["65532:65532"]);
    // distroless has no /bin/sh: a RUN or a shell-form CMD in the runtime stage cannot work.
    expect(byKeyword(runtime, "RUN")).toEqual([]);
    expect(byKeyword(runtime, "CMD").filter((c) => !execForm(c))).toEqual([]);
  });

  test("copies into the runtime image only the binary, its data folder and the protos", () => {
    const sources = byKeyword(runtime, "COPY").flatMap((c) => argsOf(c).slice(0, -1));
    expect(sources).toContain(`/out/${service}`);
    for (const source of sources) expect([`/out/${service}`, "/out/data", "proto/"]).toContain(source);
  });

  test("EXPOSEs exactly the containerPorts of its Deployment", () => {
    const exposed = byKeyword(runtime, "EXPOSE").flatMap(argsOf).map(Number).sort();
    expect(exposed).toEqual((container.ports ?? []).map((p) => p.containerPort).sort());
  });

  test("sends the build every file the service imports, and only packages from dependencies", () => {
    const { files, packages } = importClosure(`${service}/src/main.ts`);
    const copied = byKeyword(build, "COPY").flatMap((c) => argsOf(c).slice(0, -1));
    const missing = files.filter(
      ({ file }) =>
        !existsSync(join(REPO_ROOT, file)) ||
        !isInBuildContext(file, dockerignore) ||
        !copied.some((c) => file === c || file.startsWith(c)),
    );
    expect(missing.map(({ file, from }) => `${file} (imported by ${from}) is not copied into the build stage`)).toEqual(
      [],
    );
    expect(files.length).toBeGreaterThan(3);
    // `bun install --production` leaves devDependencies out of the image build.
    const notInstalled = [...packages].filter(([name]) => !(name in packageJson.dependencies));
    expect(
      notInstalled.map(([name, from]) => `${name} (imported by ${from}) is not in package.json dependencies`),
    ).toEqual([]);
  });

  if (service === "gateway") {
    test("reads its routes from the ConfigMap mount the Deployment sets, with the protos at /app/proto", () => {
      const routesEnv = byKeyword(runtime, "ENV")
        .flatMap(argsOf)
        .find((a) => a.startsWith("ROUTES_FILE="));
      expect(routesEnv).toBe(`ROUTES_FILE=${container.env?.find((e) => e.name === "ROUTES_FILE")?.value}`);
      expect(byKeyword(runtime, "COPY").map(argsOf)).toContainEqual(["proto/", "/app/proto/"]);
    });
  }
});

describe(".dockerignore", () => {
  test.each([
    "package.json",
    "bun.lock",
    "bunfig.toml",
    "tsconfig.json",
    "lib/env.ts",
    "proto/userverify.proto",
    "proto/grpc/health/v1/health.proto",
    "gateway/src/main.ts",
    "webapp/src/main.ts",
    "rpcapp/src/main.ts",
  ])("sends %s to the build", (path) => {
    expect(isInBuildContext(path, dockerignore)).toBe(true);
  });

  test.each([
    "node_modules/zx/package.json",
    "gateway/node_modules/x/index.js",
    "webapp/test/app.test.ts",
    "gateway/src/config/load.test.ts",
    "scripts/stack/testing/ports.ts",
    "k8s/webapp.yaml",
    "scripts/up.ts",
    "bench/run.ts",
    ".git/HEAD",
    ".data/webapp.sqlite",
    "dist/gateway",
    ".tools/node_modules/.bin/bun",
    "README.md",
    "gateway/README.md",
  ])("keeps %s out of the build", (path) => {
    expect(isInBuildContext(path, dockerignore)).toBe(false);
  });

  test("lets through exactly the inputs whose changes make scripts/up.ts tag the images -dirty", () => {
    const reincluded = dockerignore
      .split("\n")
      .filter((l) => l.startsWith("!"))
      .map((l) => l.slice(1).replace(/\/$/, ""));
    expect(reincluded.sort()).toEqual(BUILD_INPUTS.filter((i) => i !== ".dockerignore").sort());
  });
});
