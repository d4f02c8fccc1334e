/**
 * The images `make up` builds: one per service, from `<service>/Dockerfile`, named
 * `portico/<service>:<tag>`. k8s/test checks that the Deployments run exactly these.
 */
export const SERVICES = ["gateway", "webapp", "rpcapp"] as const;
export type Service = (typeof SERVICES)[number];

export const IMAGE_REPOSITORY_PREFIX = "portico";

/** `portico/webapp` */
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
