/**
 * The images `make up` builds: one per service, from `<service>/Dockerfile`, named
 * `portico/<service>:<tag>`. k8s/test checks that the Deployments run exactly these.
 */
export const SERVICES = ["gateway", "webapp", "rpcapp"] as const;
export type Service = (typeof SERVICES)[number];

export const IMAGE_REPOSITORY_PREFIX = "portico";

/**
 * `bun build` flags every service binary shares; `compileFlags` adds each one's bytecode order,
 * and that is what `make build` and every Dockerfile's build stage use (k8s/test/dockerfiles.test.ts
 * checks). A compiled binary would otherwise read a .env and a bunfig.toml from its working
 * directory at start-up: a stray file there must not change how a service runs
 * (https://bun.sh/docs/bundler/executables).
 */
export const COMPILE_FLAGS = [
  "--compile",
  "--bytecode",
  "--format=esm",
  "--no-compile-autoload-dotenv",
  "--no-compile-autoload-bunfig",
] as const;

/**
 * Where a service's bytecode order lives (scripts/bytecode-order.ts records it): which functions a
 * replica runs as it starts and serves its first requests, laid out together at the front of the
 * binary by `bun build --bytecode-order` — fewer pages mapped at start-up and at rest.
 */
export function bytecodeOrderFile(service: Service): string {
  return `${service}/bytecode.order`;
}

/** The `bun build` flags for one service: COMPILE_FLAGS and its bytecode order. */
export function compileFlags(service: Service): string[] {
  return [...COMPILE_FLAGS, `--bytecode-order=${bytecodeOrderFile(service)}`];
}

/** `portico/webapp` */
/**
 * The runtime base of every image, as each Dockerfile's last FROM names it. distroless publishes no
 * version tags (`nonroot` moves with each Debian update), so the image is pinned by its index
 * digest: this is the multi-arch digest that independent public projects pin for
 * `cc-debian12:nonroot`; it could not be pulled where it was written. Check or refresh it with
 * `crane digest gcr.io/distroless/cc-debian12:nonroot` (or `docker buildx imagetools inspect`).
 */
export const RUNTIME_BASE_DIGEST = "sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f";

export function imageName(service: Service): string {
  return `${IMAGE_REPOSITORY_PREFIX}/${service}`;
}

/** `portico/webapp:3f2a9c1` */
export function imageRef(service: Service, tag: string): string {
  return `${imageName(service)}:${tag}`;
}

export function dockerfileOf(service: Service): string {
  return `${service}/Dockerfile`;
}

/**
 * What the image builds read (the Docker build context that .dockerignore lets through): a change
 * here changes the images, and so their tag. k8s/test/dockerfiles.test.ts keeps this in step with
 * .dockerignore.
 */
export const BUILD_INPUTS = [
  "package.json",
  "bun.lock",
  "bunfig.toml",
  "tsconfig.json",
  ".dockerignore",
  "lib",
  "proto",
  ...SERVICES,
] as const;
