/**
 * Hand-written schemas for the custom resources k8s/ uses, so they are validated as strictly as
 * the built-in kinds (strict-schema.ts): no CRD is installed here to validate against, and an
 * unknown key would otherwise pass unnoticed — KEDA ignores a misspelt `minReplicaCont` and
 * scales from 0. Written from KEDA's ScaledObject specification
 * (https://keda.sh/docs/latest/reference/scaledobject-spec/) for the fields this repository may
 * use; the trigger types used here also have their metadata keys checked.
 */
import { type Static, type TSchema, Type as T } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import type { KubeObject, Path } from "./manifests.ts";

const strict = { additionalProperties: false } as const;
const Name = T.String({ minLength: 1, maxLength: 253 });

const HpaScalingRules = T.Object(
  {
    stabilizationWindowSeconds: T.Optional(T.Integer({ minimum: 0, maximum: 3600 })),
    selectPolicy: T.Optional(T.Union([T.Literal("Max"), T.Literal("Min"), T.Literal("Disabled")])),
    policies: T.Optional(
      T.Array(
        T.Object(
          {
            type: T.Union([T.Literal("Pods"), T.Literal("Percent")]),
            value: T.Integer({ minimum: 1 }),
            periodSeconds: T.Integer({ minimum: 1, maximum: 1800 }),
          },
          strict,
        ),
      ),
    ),
  },
  strict,
);

const MetricType = T.Union([T.Literal("AverageValue"), T.Literal("Value"), T.Literal("Utilization")]);

export const ScaledObjectSchema = T.Object(
  {
    apiVersion: T.Literal("keda.sh/v1alpha1"),
    kind: T.Literal("ScaledObject"),
    metadata: T.Object(
      {
        name: Name,
        namespace: T.Optional(Name),
        labels: T.Optional(T.Record(T.String(), T.String())),
        annotations: T.Optional(T.Record(T.String(), T.String())),
      },
      strict,
    ),
    spec: T.Object(
      {
        scaleTargetRef: T.Object(
          {
            apiVersion: T.Optional(Name),
            kind: T.Optional(Name),
            name: Name,
            envSourceContainerName: T.Optional(Name),
          },
          strict,
        ),
        pollingInterval: T.Optional(T.Integer({ minimum: 1 })),
        cooldownPeriod: T.Optional(T.Integer({ minimum: 0 })),
        initialCooldownPeriod: T.Optional(T.Integer({ minimum: 0 })),
        idleReplicaCount: T.Optional(T.Integer({ minimum: 0 })),
        minReplicaCount: T.Optional(T.Integer({ minimum: 0 })),
        maxReplicaCount: T.Optional(T.Integer({ minimum: 1 })),
        fallback: T.Optional(
          T.Object({ failureThreshold: T.Integer({ minimum: 1 }), replicas: T.Integer({ minimum: 0 }) }, strict),
        ),
        advanced: T.Optional(
          T.Object(
            {
              restoreToOriginalReplicaCount: T.Optional(T.Boolean()),
              horizontalPodAutoscalerConfig: T.Optional(
                T.Object(
                  {
                    name: T.Optional(Name),
                    behavior: T.Optional(
                      T.Object(
                        { scaleUp: T.Optional(HpaScalingRules), scaleDown: T.Optional(HpaScalingRules) },
                        strict,
                      ),
                    ),
                  },
                  strict,
                ),
              ),
              scalingModifiers: T.Optional(
                T.Object(
                  {
                    target: T.String(),
                    activationTarget: T.Optional(T.String()),
                    metricType: T.Optional(MetricType),
                    formula: T.String(),
                  },
                  strict,
                ),
              ),
            },
            strict,
          ),
        ),
        triggers: T.Array(
          T.Object(
            {
              type: Name,
              name: T.Optional(Name),
              metricType: T.Optional(MetricType),
              useCachedMetrics: T.Optional(T.Boolean()),
              // Every value is a string in KEDA's API: `threshold: 50` (a number) is rejected by the CRD.
              metadata: T.Record(T.String(), T.String()),
              authenticationRef: T.Optional(
                T.Object(
                  {
                    name: Name,
                    kind: T.Optional(
                      T.Union([T.Literal("TriggerAuthentication"), T.Literal("ClusterTriggerAuthentication")]),
                    ),
                  },
                  strict,
                ),
              ),
            },
            strict,
          ),
          { minItems: 1 },
        ),
      },
      strict,
    ),
  },
  strict,
);

export type ScaledObject = Static<typeof ScaledObjectSchema>;

/** Metadata keys of the trigger types used here: required, and the others allowed. */
const TRIGGER_METADATA: Record<string, { required: string[]; optional: string[] }> = {
  cpu: { required: ["value"], optional: ["containerName"] },
  memory: { required: ["value"], optional: ["containerName"] },
  prometheus: {
    required: ["serverAddress", "query", "threshold"],
    optional: [
      "activationThreshold",
      "namespace",
      "customHeaders",
      "ignoreNullValues",
      "queryParameters",
      "unsafeSsl",
      "timeout",
      "authModes",
    ],
  },
};

export interface SchemaProblem {
  path: Path;
  message: string;
}

function schemaProblems(schema: TSchema, object: unknown): SchemaProblem[] {
  return [...Value.Errors(schema, object)].map((e) => ({
    path: e.path
      .split("/")
      .slice(1)
      .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, "/").replace(/~0/g, "~"))),
    message: e.message === "Unexpected property" ? "unknown field" : e.message,
  }));
}

export function validateScaledObject(object: KubeObject): SchemaProblem[] {
  const problems = schemaProblems(ScaledObjectSchema, object);
  if (problems.length > 0) return problems;
  const so = object as unknown as ScaledObject;
  so.spec.triggers.forEach((trigger, i) => {
    const keys = TRIGGER_METADATA[trigger.type];
    if (!keys) return;
    for (const key of keys.required)
      if (trigger.metadata[key] === undefined)
        problems.push({
          path: ["spec", "triggers", i, "metadata", key],
          message: `required by the ${trigger.type} trigger`,
        });
    for (const key of Object.keys(trigger.metadata)) {
      if (!keys.required.includes(key) && !keys.optional.includes(key)) {
        problems.push({
          path: ["spec", "triggers", i, "metadata", key],
          message: `unknown ${trigger.type} trigger metadata; allowed: ${[...keys.required, ...keys.optional].join(", ")}`,
        });
      }
    }
    if (
      (trigger.type === "cpu" || trigger.type === "memory") &&
      trigger.metricType !== "Utilization" &&
      trigger.metricType !== "AverageValue"
    ) {
      problems.push({
        path: ["spec", "triggers", i, "metricType"],
        message: `a ${trigger.type} trigger needs metricType Utilization or AverageValue`,
      });
    }
  });
  const { minReplicaCount = 0, maxReplicaCount = 100 } = so.spec;
  if (maxReplicaCount < minReplicaCount)
    problems.push({ path: ["spec", "maxReplicaCount"], message: `is below minReplicaCount (${minReplicaCount})` });
  return problems;
}

/** apiVersion + kind → its validator; strict-schema.ts consults this before KNOWN_CUSTOM_RESOURCES. */
export const CUSTOM_RESOURCE_VALIDATORS: Readonly<Record<string, (object: KubeObject) => SchemaProblem[]>> = {
  "keda.sh/v1alpha1 ScaledObject": validateScaledObject,
};
