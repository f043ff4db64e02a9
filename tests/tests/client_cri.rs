//! Kubernetes through CRI: this test plays the kubelet, a gRPC client of a private
//! containerd's CRI plugin whose runtime handlers (`strata`, `strata-sandbox`) run strata
//! through the runc v2 shim. The lifecycle test's pods use the host network; the two-container
//! pods use a CNI bridge from Debian's containernetworking-plugins, on each backend.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use strata_integration::clients::{
    busybox_oci_archive, require_client, run_ok, CgroupParent, Containerd, CriSettings,
    LoggedRuntime, CNI_PLUGINS,
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

/// A private containerd with its CRI plugin, the busybox image imported and seen by CRI,
/// and the test's kubelet connected to it.
async fn start_cri(name: &str, settings: &CriSettings<'_>) -> (Containerd, Kubelet) {
    let containerd = Containerd::start(Some(settings));
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
    let k = Kubelet {
        rt: RuntimeServiceClient::new(channel),
        cgroups: CgroupParent::new(name),
        logs,
    };
    (containerd, k)
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
    let (containerd, mut k) = start_cri(
        "cri",
        &CriSettings {
            handlers: &[("strata", &runtime.path), ("strata-sandbox", &sandbox_link)],
            sandbox_image: IMAGE,
            cni: None,
        },
    )
    .await;
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

    // Stronger isolation asked for by annotation that this pod cannot have (a host-network
    // pod, which no VM can give): refused with strata's own message, which reaches the
    // kubelet through the shim.
    let vm_pod = k.pod_config("wants-vm", &[("dev.strata.backend", "vm")]);
    let err = k.run_pod(&vm_pod, "strata").await.unwrap_err();
    assert!(
        err.message()
            .contains("vm backend: linux.namespaces has no network namespace"),
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

async fn exec_sync(k: &mut Kubelet, id: &str, script: &str) -> (i32, String) {
    let r =
        k.rt.exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 60,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned())
}

/// The strong-isolation RuntimeClass for real: a two-container pod on the `strata-vm`
/// handler (the stock runc shim, strata's vm backend) with a CNI bridge network, a hostPort,
/// an emptyDir-like and a read-only configMap-like volume, in exactly one VM.
#[tokio::test(flavor = "current_thread")]
async fn cri_vm_pod_with_pod_network_volumes_and_one_vm() {
    let cfg = strata_integration::TempDir::new("cri-vm-cfg");
    if !cri_network_clients() {
        return;
    }
    let Some(config) = strata_integration::vm_node_config(cfg.path()) else {
        return;
    };
    let runtime = LoggedRuntime::with_config("cri-vm", &config);
    pod_with_network_and_volumes(&runtime, "strata-vm", "vm", 77).await;
}

/// The same pod on the `strata-sandbox` handler under the built-in policy (no node policy):
/// everything the bundle grants, the pod network, the volumes, as on native.
#[tokio::test(flavor = "current_thread")]
async fn cri_sandbox_pod_with_pod_network_and_volumes_as_on_native() {
    if !cri_network_clients() {
        return;
    }
    let runtime = LoggedRuntime::new("cri-sandbox");
    pod_with_network_and_volumes(&runtime, "strata-sandbox", "sandbox", 78).await;
}

/// The same pod on the native `strata` handler: the reference the other two must match.
#[tokio::test(flavor = "current_thread")]
async fn cri_native_pod_with_pod_network_and_volumes() {
    if !cri_network_clients() {
        return;
    }
    let runtime = LoggedRuntime::new("cri-native");
    pod_with_network_and_volumes(&runtime, "strata", "native", 79).await;
}

fn cri_network_clients() -> bool {
    if !strata_integration::is_root() {
        eprintln!("SKIPPED: CRI tests need root");
        return false;
    }
    require_client(&["containerd", "ctr", "containerd-shim-runc-v2", "iptables"])
        && require_client(&[&format!("{CNI_PLUGINS}/bridge")])
}

/// A server and a client container in one pod on `handler` (whose backend is `backend`),
/// on a CNI bridge `10.89.<subnet>.0/24`: localhost between them, the pod IP and a hostPort
/// from the host, egress to the bridge address, an emptyDir-like volume both write, a
/// read-only configMap-like volume the host updates, shared and private PID namespaces; then
/// nothing left. Each test takes its own subnet, so they run side by side.
async fn pod_with_network_and_volumes(
    runtime: &LoggedRuntime,
    handler: &str,
    backend: &str,
    subnet: u8,
) {
    let name = format!("cri-{backend}");
    let link = if handler == "strata" {
        runtime.path.clone()
    } else {
        runtime.link(handler)
    };
    let net = format!("10.89.{subnet}");
    let gateway = format!("{net}.1");
    let bridge = format!(
        "strata-cri{}",
        std::process::id() % 1000 * 100 + u32::from(subnet)
    );
    let ipam = strata_integration::TempDir::new(&format!("{name}-ipam"));
    let cni = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("strata-{name}"),
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("{net}.0/24")}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": ipam.path()}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string();
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .status();
        }
    }
    let _bridge = Bridge(bridge.clone());
    let (containerd, mut k) = start_cri(
        &name,
        &CriSettings {
            handlers: &[(handler, &link)],
            sandbox_image: IMAGE,
            cni: Some(&cni),
        },
    )
    .await;
    let handler_root = containerd
        .dir
        .path()
        .join(format!("runtime-root/{handler}/k8s.io"));
    let volumes = strata_integration::TempDir::new(&format!("{name}-volumes"));
    let (data, conf) = (volumes.path().join("data"), volumes.path().join("conf"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(conf.join("..v1")).unwrap();
    std::fs::write(conf.join("..v1/key"), "v1").unwrap();
    std::os::unix::fs::symlink("..v1", conf.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/key", conf.join("key")).unwrap();
    // A listener on the bridge's host address, for the pod's egress.
    let egress = std::net::TcpListener::bind(format!("{gateway}:0"));

    let pod_name = format!("{backend}-pod");
    let mut pod_config = k.pod_config(&pod_name, &[]);
    pod_config.hostname = pod_name.clone();
    if let Some(ns) = pod_config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Pod as i32;
    }
    let host_port = 18000 + (std::process::id() % 300) as i32 * 3 + i32::from(subnet % 3);
    pod_config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let pod = k
        .run_pod(&pod_config, handler)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log_text()));
    let status =
        k.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("a status");
    let pod_ip = status.network.expect("the pod's network").ip;
    assert!(pod_ip.starts_with(&format!("{net}.")), "pod IP {pod_ip:?}");
    // The egress listener needs the bridge, which the pod's network made.
    let egress = egress
        .or_else(|_| std::net::TcpListener::bind(format!("{gateway}:0")))
        .expect("a listener on the bridge address");
    let egress_port = egress.local_addr().unwrap().port();

    let mount = |path: &Path, at: &str, readonly: bool| Mount {
        container_path: at.into(),
        host_path: path.display().to_string(),
        readonly,
        ..Default::default()
    };
    // The kubelet's default: a PID namespace per container; with shareProcessNamespace,
    // the pod's.
    let make = |name: &str, script: String, mounts: Vec<Mount>, pid: NamespaceMode| {
        CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into()],
                args: vec![script],
                log_path: format!("{name}.log"),
                mounts,
                linux: Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: NamespaceMode::Pod as i32,
                            pid: pid as i32,
                            ipc: NamespaceMode::Pod as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        }
    };
    let server = "echo up; while true; do nc -l -p 8080 -e echo hello-from-pod; done".to_string();
    let client = format!(
        "until nc 127.0.0.1 8080 </dev/null > /data/got; do sleep 0.2; done; \
         echo from-pod | nc {gateway} {egress_port}; echo client-done; sleep 100000"
    );
    let mut ids = Vec::new();
    for (name, script, mounts, pid) in [
        (
            "server",
            server,
            vec![mount(&data, "/data", false)],
            NamespaceMode::Container,
        ),
        (
            "client",
            client,
            vec![mount(&data, "/data", false), mount(&conf, "/config", true)],
            NamespaceMode::Pod,
        ),
    ] {
        let id = k
            .rt
            .create_container(make(name, script, mounts, pid))
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", containerd.log_text()))
            .into_inner()
            .container_id;
        k.rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", containerd.log_text()));
        ids.push(id);
    }
    let (server_id, client_id) = (ids[0].clone(), ids[1].clone());

    // The pod reaches the bridge's host address, and is seen there with its own IP.
    egress.set_nonblocking(false).unwrap();
    let (mut conn, peer) = egress.accept().expect("the pod's connection");
    assert_eq!(peer.ip().to_string(), pod_ip, "the pod's egress address");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut conn, &mut got).unwrap();
    assert_eq!(got, "from-pod\n");
    // Localhost between the containers, through the shared emptyDir-like volume.
    assert_eq!(
        std::fs::read_to_string(data.join("got")).unwrap_or_default(),
        "hello-from-pod\n"
    );
    // The host reaches the pod IP, and the hostPort through portmap.
    for addr in [format!("{pod_ip}:8080"), format!("{gateway}:{host_port}")] {
        // The server listens again only once its last connection is done (a guest under
        // TCG is slow to): refused for a moment, then served.
        let text = strata_integration::answer_of(&addr, Duration::from_secs(10));
        assert_eq!(text, "hello-from-pod\n", "from {addr}");
    }
    // The configMap-like volume: read-only, and a host-side `..data` swap seen within 5 s.
    let (code, out) = exec_sync(&mut k, &client_id, "cat /config/key; touch /config/x").await;
    assert_eq!((code != 0, out.as_str()), (true, "v1"));
    std::fs::create_dir_all(conf.join("..v2")).unwrap();
    std::fs::write(conf.join("..v2/key"), "v2").unwrap();
    std::os::unix::fs::symlink("..v2", conf.join("..data_tmp")).unwrap();
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).unwrap();
    let swapped = std::time::Instant::now();
    let (_, out) = exec_sync(
        &mut k,
        &client_id,
        "i=0; until [ \"$(cat /config/key)\" = v2 ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; cat /config/key",
    )
    .await;
    assert_eq!(out, "v2");
    assert!(
        swapped.elapsed() < Duration::from_secs(5),
        "{:?}",
        swapped.elapsed()
    );
    // The client shares the pod's PID namespace (it sees the sandbox's process); the server
    // has its own (it does not).
    let (_, out) = exec_sync(&mut k, &client_id, "ps -o args").await;
    assert!(out.contains("sleep 2147483647"), "{out}");
    let (_, out) = exec_sync(&mut k, &server_id, "ps -o args").await;
    assert!(!out.contains("sleep 2147483647"), "{out}");
    // What failed on the sandbox before it followed the bundle: `mkdir -p` of existing
    // directories, writes to the pod's volume, netlink (`ip` shows the pod's address).
    let (code, out) = exec_sync(
        &mut k,
        &server_id,
        "mkdir -p / /data/a/b && echo w > /data/a/b/f && busybox ip -o -4 addr show",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!(" {pod_ip}/24 ")), "{out}");
    assert_eq!(std::fs::read_to_string(data.join("a/b/f")).unwrap(), "w\n");
    // The pod's hostname; the kernel and the filter are the backend's.
    let (_, out) = exec_sync(
        &mut k,
        &server_id,
        "hostname; uname -r; grep ^Seccomp: /proc/self/status",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&pod_name.as_str()), "{out}");
    let kernel = lines.get(1).copied().unwrap_or("");
    let seccomp = lines
        .get(2)
        .map(|l| l.split_whitespace().last().unwrap_or(""));
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    match backend {
        "vm" => assert!(strata_integration::is_guest_kernel(kernel), "{out}"),
        _ => assert_eq!(kernel, host_kernel.trim(), "{out}"),
    }
    // The sandbox's supervisor filters every process; a CRI container without a seccomp
    // profile has none on native.
    if backend != "vm" {
        let want = if backend == "sandbox" { "2" } else { "0" };
        assert_eq!(seccomp, Some(want), "{out}");
    }
    for id in [&pod, &server_id, &client_id] {
        let st = strata_state(&handler_root, id);
        assert_eq!(st["annotations"]["dev.strata.backend"], backend, "{st}");
    }
    // On vm, exactly one VM runs for the pod, none for its containers.
    let pod_run = strata::backend::vm::run_dir_for(&handler_root.join(&pod));
    if backend == "vm" {
        assert_eq!(
            strata_integration::vm_processes(pod_run.to_str().unwrap()).len(),
            1,
            "the pod's VM"
        );
        assert_eq!(
            strata_integration::vm_processes(&handler_root.display().to_string()).len(),
            0
        );
        for id in &ids {
            assert!(!strata::backend::vm::run_dir_for(&handler_root.join(id)).exists());
        }
    }
    let stats =
        k.rt.container_stats(ContainerStatsRequest {
            container_id: server_id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    assert!(stats.memory.is_some() && stats.cpu.is_some(), "{stats:?}");
    let log =
        std::fs::read_to_string(k.logs.join(format!("{pod_name}/server.log"))).unwrap_or_default();
    assert!(log.contains("stdout F up"), "container log: {log:?}");

    // Stop and remove as the kubelet does; then nothing of the pod is left.
    for id in &ids {
        k.rt.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 5,
        })
        .await
        .expect("StopContainer");
        let (state, _) = k.container_state(id).await;
        assert_eq!(state, ContainerState::ContainerExited as i32);
        k.rt.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
    }
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
    assert_eq!(
        strata_integration::vm_processes(&handler_root.display().to_string()).len(),
        0,
        "a VM is left"
    );
    assert!(!pod_run.exists(), "the VM's run directory is left");
    let left: Vec<_> = std::fs::read_dir(&handler_root)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "strata state left: {left:?}");
    assert!(
        k.cgroups.leftovers().is_empty(),
        "{:?}",
        k.cgroups.leftovers()
    );
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("strata-tap"),
        "a tap is left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("/run/strata-vm/"),
        "a share is left mounted"
    );
    runtime.report(&format!("containerd CRI ({backend} pod)"));
    drop(k);
    drop(containerd);
}
