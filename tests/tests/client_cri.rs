//! Kubernetes through CRI: this test plays the kubelet, a gRPC client of a private
//! containerd's CRI plugin whose runtime handlers (`strata`, `strata-sandbox`) run strata
//! through the runc v2 shim. Pods use the host network (no CNI here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use strata_integration::clients::{
    busybox_oci_archive, require_client, run_ok, CgroupParent, Containerd, CriSettings,
    LoggedRuntime,
};
use strata_integration::{strata_bin, unique};
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "docker.io/strata/busybox:latest";

async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:0")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connecting to containerd's CRI socket")
}

struct Kubelet {
    rt: RuntimeServiceClient<Channel>,
    cgroups: CgroupParent,
    logs: PathBuf,
}

impl Kubelet {
    fn pod_config(&self, name: &str, annotations: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: unique("uid"),
                namespace: "strata-test".into(),
                attempt: 0,
            }),
            // The kubelet sets no hostname for a host-network pod: it shares the node's UTS
            // namespace, and a runtime cannot set a hostname without a private one.
            hostname: String::new(),
            log_directory: self.logs.join(name).display().to_string(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/{name}", self.cgroups.path),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn run_pod(
        &mut self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        let resp = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await?;
        Ok(resp.into_inner().pod_sandbox_id)
    }

    async fn container_state(&mut self, id: &str) -> (i32, i32) {
        let st = self
            .rt
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a status");
        (st.state, st.exit_code)
    }

    /// The container's memory limit as the host's cgroup says.
    fn memory_limit_on_host(&self, id: &str) -> Option<u64> {
        self.cgroups
            .leftovers()
            .into_iter()
            .filter(|d| d.ends_with(id))
            .find_map(|d| {
                ["memory.limit_in_bytes", "memory.max"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
            })
            .and_then(|t| t.trim().parse().ok())
    }
}

/// `strata state` of a container the shim created, read from the handler's runtime root.
fn strata_state(runtime_root: &Path, id: &str) -> serde_json::Value {
    let out = run_ok(
        std::process::Command::new(strata_bin())
            .args(["--config", strata_integration::NO_NODE_CONFIG])
            .arg("--root")
            .arg(runtime_root)
            .args(["state", id]),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn cri_pod_lifecycle_and_backend_choice() {
    if !strata_integration::is_root() {
        eprintln!("SKIPPED: CRI tests need root");
        return;
    }
    if !require_client(&["containerd", "ctr", "containerd-shim-runc-v2"]) {
        return;
    }
    let runtime = LoggedRuntime::new("cri");
    let sandbox_link = runtime.link("strata-sandbox");
    let containerd = Containerd::start(Some(&CriSettings {
        handlers: &[("strata", &runtime.path), ("strata-sandbox", &sandbox_link)],
        sandbox_image: IMAGE,
    }));
    let archive = busybox_oci_archive(containerd.dir.path(), IMAGE, &["sleep", "2147483647"]);
    run_ok(
        containerd
            .ctr("k8s.io")
            .args(["images", "import"])
            .arg(&archive),
    );
    let channel = connect(&containerd.socket).await;
    let mut images = ImageServiceClient::new(channel.clone());
    // The CRI plugin learns of imported images from containerd's event stream.
    let mut seen = false;
    for _ in 0..100 {
        let st = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("ImageStatus");
        if st.into_inner().image.is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "CRI never saw the imported image");

    let logs = containerd.dir.path().join("pod-logs");
    let mut k = Kubelet {
        rt: RuntimeServiceClient::new(channel),
        cgroups: CgroupParent::new("cri"),
        logs,
    };
    let version =
        k.rt.version(VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
    assert_eq!(version.runtime_name, "containerd");

    // A pod on the strata handler that asks for the native backend by annotation.
    let pod_config = k.pod_config("web", &[("dev.strata.backend", "native")]);
    let pod = k
        .run_pod(&pod_config, "strata")
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log_text()));
    let container =
        k.rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo started; trap 'exit 0' TERM; while :; do sleep 0.1; done".into()],
                log_path: "app.log".into(),
                annotations: HashMap::from([(
                    "dev.strata.backend".to_string(),
                    "native".to_string(),
                )]),
                linux: Some(LinuxContainerConfig {
                    resources: Some(LinuxContainerResources {
                        memory_limit_in_bytes: 64 << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", containerd.log_text()))
        .into_inner()
        .container_id;
    k.rt.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", containerd.log_text()));
    assert_eq!(
        k.container_state(&container).await.0,
        ContainerState::ContainerRunning as i32
    );

    // The backend that ran is the one the pod asked for, as strata recorded it.
    let handler_root = containerd.dir.path().join("runtime-root/strata/k8s.io");
    for id in [&pod, &container] {
        let st = strata_state(&handler_root, id);
        assert_eq!(st["status"], "running", "{st}");
        assert_eq!(st["annotations"]["dev.strata.backend"], "native", "{st}");
    }

    let exec =
        k.rt.exec_sync(ExecSyncRequest {
            container_id: container.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo exec-out; exit 3".into()],
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(exec.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "exec-out\n");

    let stats =
        k.rt.container_stats(ContainerStatsRequest {
            container_id: container.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let memory = stats.memory.expect("memory stats");
    assert!(
        memory.working_set_bytes.map(|v| v.value).unwrap_or(0) > 0,
        "{memory:?}"
    );
    assert!(stats.cpu.is_some());

    assert_eq!(k.memory_limit_on_host(&container), Some(64 << 20));
    k.rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: container.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    assert_eq!(k.memory_limit_on_host(&container), Some(128 << 20));

    k.rt.stop_container(StopContainerRequest {
        container_id: container.clone(),
        timeout: 10,
    })
    .await
    .expect("StopContainer");
    assert_eq!(
        k.container_state(&container).await,
        (ContainerState::ContainerExited as i32, 0)
    );
    let log = std::fs::read_to_string(k.logs.join("web/app.log")).unwrap_or_default();
    assert!(log.contains("stdout F started"), "container log: {log:?}");
    k.rt.remove_container(RemoveContainerRequest {
        container_id: container.clone(),
    })
    .await
    .expect("RemoveContainer");
    k.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("StopPodSandbox");
    k.rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("RemovePodSandbox");

    // Stronger isolation asked for by annotation that this node cannot give (no guest kernel
    // in its node config): refused with strata's own message, which reaches the kubelet
    // through the shim.
    let vm_pod = k.pod_config("wants-vm", &[("dev.strata.backend", "vm")]);
    let err = k.run_pod(&vm_pod, "strata").await.unwrap_err();
    assert!(
        err.message().contains("vm backend: no guest kernel"),
        "{}",
        err.message()
    );
    // The strata-sandbox handler runs its pod under the sandbox backend: seen from inside
    // (the supervisor's filter in /proc/self/status) and in strata's own state.
    let sandboxed = k.pod_config("sandboxed", &[]);
    let spod = k
        .run_pod(&sandboxed, "strata-sandbox")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox on strata-sandbox: {e}\n{}",
                containerd.log_text()
            )
        });
    let sc =
        k.rt.create_container(CreateContainerRequest {
            pod_sandbox_id: spod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "confined".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "1000".into()],
                log_path: "confined.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(sandboxed.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer (sandbox): {e}\n{}", containerd.log_text()))
        .into_inner()
        .container_id;
    k.rt.start_container(StartContainerRequest {
        container_id: sc.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer (sandbox): {e}\n{}", containerd.log_text()));
    let inside =
        k.rt.exec_sync(ExecSyncRequest {
            container_id: sc.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                // Under the supervisor's filter, and its built-in policy follows the
                // bundle: a CRI container's root is writable, as under native.
                "grep Seccomp: /proc/self/status; echo x > /etc/x && echo written".into(),
            ],
            timeout: 30,
        })
        .await
        .expect("ExecSync (sandbox)")
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout),
        "Seccomp:\t2\nwritten\n"
    );
    let sandbox_root = containerd
        .dir
        .path()
        .join("runtime-root/strata-sandbox/k8s.io");
    assert_eq!(
        strata_state(&sandbox_root, &sc)["annotations"]["dev.strata.backend"],
        "sandbox"
    );
    k.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: spod.clone(),
    })
    .await
    .expect("StopPodSandbox (sandbox)");
    k.rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: spod.clone(),
    })
    .await
    .expect("RemovePodSandbox (sandbox)");
    // Nothing of the pods stays behind in strata's state.
    for root in ["strata", "strata-sandbox"] {
        let dir = containerd
            .dir
            .path()
            .join("runtime-root")
            .join(root)
            .join("k8s.io");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: {left:?}", dir.display());
    }

    for verb in ["create", "start", "exec", "update", "kill", "delete"] {
        runtime.assert_used(verb);
    }
    runtime.report("containerd CRI");
    drop(k);
    drop(containerd);
}
