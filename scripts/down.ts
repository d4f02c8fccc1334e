/**
 * `make down`: deletes the portico namespace, and with it everything `make up` deployed. minikube
 * itself keeps running (`minikube stop` stops it; `minikube delete` removes it). The context is
 * named explicitly (KUBE_CONTEXT, default "minikube") so no other cluster is ever touched.
 */
import { main, requireTools, run, step } from "./cli.ts";
import { kubeContext, kubectl, NAMESPACE } from "./cluster/minikube.ts";

await main("make down", async () => {
  requireTools(["kubectl"], "`make down` deletes the portico namespace from the minikube cluster with kubectl.");
  step(`delete namespace ${NAMESPACE} (context ${kubeContext()})`);
  await run(kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found"), { stream: true });
  console.log(`namespace ${NAMESPACE} is gone. minikube is still running: \`minikube stop\` stops it.`);
});
