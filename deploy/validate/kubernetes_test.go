package validate

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kustomization is the subset of kustomize's Kustomization that this
// directory uses; decoding it strictly rejects anything else.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Namespace       string `json:"namespace,omitempty"`
	Labels          []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// manifests holds every object of deploy/kubernetes, decoded.
type manifests struct {
	kustomization *kustomization
	files         []string
	statefulSets  []*appsv1.StatefulSet
	services      []*corev1.Service
	configMaps    []*corev1.ConfigMap
	secrets       []*corev1.Secret
	pdbs          []*policyv1.PodDisruptionBudget
	netpols       []*networkingv1.NetworkPolicy
}

// strictDecode converts one YAML document to JSON (duplicate keys are an
// error) and decodes it into out with sigs.k8s.io/json, the decoder of the
// API server: unlike encoding/json it matches field names case-sensitively,
// so "clusterIp" is reported as unknown instead of filling ClusterIP.
func strictDecode(doc []byte, out any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(js, out, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// decodeStream splits a multi-document YAML stream and decodes each object
// into the k8s.io/api type named by its apiVersion and kind.
func (m *manifests) decodeStream(name string, r io.Reader) error {
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 0; ; i++ {
		doc, err := yr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return fmt.Errorf("%s document %d: %w", name, i, err)
		}
		var obj any
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/StatefulSet":
			o := &appsv1.StatefulSet{}
			m.statefulSets, obj = append(m.statefulSets, o), o
		case "v1/Service":
			o := &corev1.Service{}
			m.services, obj = append(m.services, o), o
		case "v1/ConfigMap":
			o := &corev1.ConfigMap{}
			m.configMaps, obj = append(m.configMaps, o), o
		case "v1/Secret":
			o := &corev1.Secret{}
			m.secrets, obj = append(m.secrets, o), o
		case "policy/v1/PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			m.pdbs, obj = append(m.pdbs, o), o
		case "networking.k8s.io/v1/NetworkPolicy":
			o := &networkingv1.NetworkPolicy{}
			m.netpols, obj = append(m.netpols, o), o
		case "kustomize.config.k8s.io/v1beta1/Kustomization":
			if m.kustomization != nil {
				return fmt.Errorf("%s: a second Kustomization", name)
			}
			m.kustomization = &kustomization{}
			obj = m.kustomization
		default:
			return fmt.Errorf("%s document %d: unexpected apiVersion %q kind %q", name, i, tm.APIVersion, tm.Kind)
		}
		if err := strictDecode(doc, obj); err != nil {
			return fmt.Errorf("%s document %d (%s): %w", name, i, tm.Kind, err)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	files, err := filepath.Glob(repo("deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests under deploy/kubernetes: %v", err)
	}
	m := &manifests{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.decodeStream(filepath.Base(f), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		m.files = append(m.files, filepath.Base(f))
	}
	return m
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	if len(m.statefulSets) != 1 {
		t.Fatalf("want one StatefulSet, got %d", len(m.statefulSets))
	}
	sts := m.statefulSets[0]
	spec := sts.Spec
	pod := spec.Template.Spec
	podLabels := labels.Set(spec.Template.Labels)

	t.Run("kustomization", func(t *testing.T) {
		if m.kustomization == nil {
			t.Fatal("no kustomization.yaml")
		}
		var want []string
		for _, f := range m.files {
			if f != "kustomization.yaml" {
				want = append(want, f)
			}
		}
		got := slices.Clone(m.kustomization.Resources)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("kustomization resources %v, want every manifest of the folder %v", got, want)
		}
	})

	t.Run("statefulset", func(t *testing.T) {
		if spec.Replicas == nil || *spec.Replicas != clusterSize {
			t.Errorf("replicas %v, want %d", spec.Replicas, clusterSize)
		}
		if spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("podManagementPolicy %q, want Parallel", spec.PodManagementPolicy)
		}
		sel, err := metav1.LabelSelectorAsSelector(spec.Selector)
		if err != nil || !sel.Matches(podLabels) {
			t.Errorf("selector %v does not match the pod labels %v (%v)", spec.Selector, podLabels, err)
		}
		// Service links would set SOKETI_PORT=tcp://... from the Service "soketi".
		if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
			t.Error("enableServiceLinks must be false: the soketi Service's links clash with SOKETI_* variables")
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("want one container, got %d", len(pod.Containers))
		}
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Error("pod securityContext must set runAsNonRoot")
		}
	})

	c := pod.Containers[0]
	env := containerEnv(t, m, c)

	t.Run("environment", func(t *testing.T) {
		names := make([]string, 0, len(env))
		for n := range env {
			names = append(names, n)
		}
		sort.Strings(names)
		checkEnvNames(t, "statefulset "+sts.Name, names)
		for name, path := range map[string]string{"CLUSTER_NODE_ID": "metadata.name", "CLUSTER_ADVERTISE_ADDRESS": "status.podIP"} {
			if got := fieldRef(c, name); got != path {
				t.Errorf("%s from fieldRef %q, want %q", name, got, path)
			}
		}
		checkPortEnv(t, "statefulset "+sts.Name, env)
		for name, want := range map[string]string{
			"ADAPTER_DRIVER":           "cluster",
			"CLUSTER_EXPECTED_SERVERS": strconv.Itoa(clusterSize),
			"CLUSTER_DATA_DIR":         dataDir,
		} {
			if env[name] != want {
				t.Errorf("%s=%q, want %q", name, env[name], want)
			}
		}
		var unicast []string
		if err := json.Unmarshal([]byte(env["CLUSTER_UNICAST_ADDRESSES"]), &unicast); err != nil {
			t.Fatalf("CLUSTER_UNICAST_ADDRESSES: %v", err)
		}
		var want []string
		for i := range clusterSize {
			want = append(want, fmt.Sprintf("%s-%d.%s", sts.Name, i, spec.ServiceName))
		}
		if !slices.Equal(unicast, want) {
			t.Errorf("CLUSTER_UNICAST_ADDRESSES %v, want the pods' stable names %v", unicast, want)
		}
		key, err := base64.StdEncoding.DecodeString(env["CLUSTER_KEY"])
		if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			t.Errorf("CLUSTER_KEY is not base64 of 16, 24 or 32 bytes (%d bytes, %v)", len(key), err)
		}
	})

	t.Run("cluster key", func(t *testing.T) {
		// The key comes from a Secret by secretKeyRef, required, and from
		// nowhere else (not a literal, a ConfigMap or an envFrom Secret).
		var refs []*corev1.SecretKeySelector
		for _, e := range c.Env {
			if e.Name == "CLUSTER_KEY" || e.Name == "SOKETI_CLUSTER_KEY" {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.Value != "" {
					t.Errorf("%s is not from a secretKeyRef", e.Name)
					continue
				}
				refs = append(refs, e.ValueFrom.SecretKeyRef)
			}
		}
		if len(refs) != 1 {
			t.Fatalf("want CLUSTER_KEY from exactly one secretKeyRef, got %d", len(refs))
		}
		if refs[0].Optional != nil && *refs[0].Optional {
			t.Error("the CLUSTER_KEY secretKeyRef is optional: a pod without the key would join as an open node")
		}
		for _, cm := range m.configMaps {
			for k := range cm.Data {
				if k == "CLUSTER_KEY" || k == "SOKETI_CLUSTER_KEY" {
					t.Errorf("ConfigMap %s holds %s", cm.Name, k)
				}
			}
		}
		for _, ef := range c.EnvFrom {
			if ef.SecretRef == nil {
				continue
			}
			s := find(m.secrets, func(x *corev1.Secret) bool { return x.Name == ef.SecretRef.Name })
			if _, ok := secretValue(s, ef.Prefix, "CLUSTER_KEY"); ok {
				t.Errorf("envFrom Secret %s also sets CLUSTER_KEY", s.Name)
			}
		}
		s := find(m.secrets, func(x *corev1.Secret) bool { return x.Name == refs[0].Name })
		if s == nil {
			t.Fatalf("Secret %q of the CLUSTER_KEY secretKeyRef is not in this folder", refs[0].Name)
		}
		if v, _ := secretValue(s, "", refs[0].Key); v != placeholderKey {
			t.Errorf("Secret %s: %s is not the documented placeholder", s.Name, refs[0].Key)
		}
	})

	t.Run("container", func(t *testing.T) {
		var got []string
		for _, p := range c.Ports {
			got = append(got, portKey(int(p.ContainerPort), string(p.Protocol)))
		}
		sort.Strings(got)
		if want := nodePorts(); !slices.Equal(got, want) {
			t.Errorf("container ports %v, want the ports the server binds %v", got, want)
		}
		checkProbe(t, "readinessProbe", c, c.ReadinessProbe, "/ready")
		checkProbe(t, "livenessProbe", c, c.LivenessProbe, "/")
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("container securityContext must set readOnlyRootFilesystem and forbid privilege escalation")
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("no %s request", r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("no %s limit", r)
			}
		}
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			t.Error("preStop hook: the image has no shell, and SIGTERM already drains")
		}
		stop := time.Duration(ptrOr(pod.TerminationGracePeriodSeconds, 30)) * time.Second
		if need := minStopTime(t, "statefulset", env["SOKETI_SHUTDOWN_GRACE_PERIOD"]); stop <= need {
			t.Errorf("terminationGracePeriodSeconds %s, want more than %s", stop, need)
		}
	})

	t.Run("data volume", func(t *testing.T) {
		var claim string
		for _, vm := range c.VolumeMounts {
			if vm.MountPath == env["CLUSTER_DATA_DIR"] {
				claim = vm.Name
			}
		}
		if claim == "" {
			t.Fatalf("nothing mounted at CLUSTER_DATA_DIR %q", env["CLUSTER_DATA_DIR"])
		}
		found := false
		for _, v := range spec.VolumeClaimTemplates {
			found = found || v.Name == claim
		}
		if !found {
			t.Errorf("the volume mounted at %s (%q) is not a volumeClaimTemplate", dataDir, claim)
		}
	})

	t.Run("services", func(t *testing.T) {
		var headless, client *corev1.Service
		for _, s := range m.services {
			if !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
				t.Errorf("service %s does not select the pods", s.Name)
			}
			switch {
			case s.Name == spec.ServiceName:
				headless = s
			case s.Spec.ClusterIP != corev1.ClusterIPNone:
				client = s
			}
		}
		if headless == nil {
			t.Fatalf("no Service named serviceName %q", spec.ServiceName)
		}
		if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
			t.Errorf("service %s: want clusterIP None and publishNotReadyAddresses", headless.Name)
		}
		if client == nil || len(m.services) != 2 {
			t.Fatalf("want the headless Service and one client Service, got %d Services", len(m.services))
		}
		// servicePorts lists "port/PROTO" and fails for a port that does not
		// forward to the same container port.
		servicePorts := func(s *corev1.Service) []string {
			var out []string
			for _, p := range s.Spec.Ports {
				target := resolvePort(c, p.TargetPort.String())
				if p.TargetPort.String() == "0" || p.TargetPort.String() == "" {
					target = int(p.Port)
				}
				if target != int(p.Port) {
					t.Errorf("service %s port %d goes to container port %d", s.Name, p.Port, target)
				}
				out = append(out, portKey(int(p.Port), string(p.Protocol)))
			}
			sort.Strings(out)
			return out
		}
		if got, want := servicePorts(client), []string{portKey(mainPort, "TCP")}; !slices.Equal(got, want) {
			t.Errorf("client service %s ports %v, want only %v", client.Name, got, want)
		}
		if got, want := servicePorts(headless), clusterPorts(); !slices.Equal(got, want) {
			t.Errorf("headless service %s ports %v, want the cluster ports %v", headless.Name, got, want)
		}
	})

	t.Run("disruption budget", func(t *testing.T) {
		if len(m.pdbs) != 1 {
			t.Fatalf("want one PodDisruptionBudget, got %d", len(m.pdbs))
		}
		p := m.pdbs[0]
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.String() != "1" {
			t.Errorf("maxUnavailable %v, want 1", p.Spec.MaxUnavailable)
		}
		if sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector); err != nil || !sel.Matches(podLabels) {
			t.Errorf("PodDisruptionBudget does not select the pods (%v)", err)
		}
	})

	t.Run("network policy", func(t *testing.T) {
		checkNetworkPolicies(t, m.netpols, c, podLabels)
	})
}

// checkNetworkPolicies evaluates the ingress rules for the pods (policies
// add up): exactly the ports a node binds are open; 6001 to anyone; the
// metrics port to a namespace selector, not to everyone; the cluster ports
// only to pods selected like the soketi pods, in their namespace.
func checkNetworkPolicies(t *testing.T, nps []*networkingv1.NetworkPolicy, c corev1.Container, podLabels labels.Set) {
	t.Helper()
	if len(nps) == 0 {
		t.Fatal("no NetworkPolicy: every port, the cluster ports included, is open to the whole cluster network")
	}
	from := map[string][][]networkingv1.NetworkPolicyPeer{} // port -> the from lists of the rules admitting it
	for _, np := range nps {
		if sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil || !sel.Matches(podLabels) {
			t.Errorf("NetworkPolicy %s does not select the pods (%v)", np.Name, err)
			continue
		}
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("NetworkPolicy %s: policyTypes %v lacks Ingress", np.Name, np.Spec.PolicyTypes)
		}
		for i, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 {
				t.Errorf("NetworkPolicy %s rule %d has no ports: it opens every port, the cluster ports included", np.Name, i)
			}
			for _, p := range r.Ports {
				if p.Port == nil || p.EndPort != nil {
					t.Errorf("NetworkPolicy %s rule %d: a port range or no port; list each port", np.Name, i)
					continue
				}
				n := resolvePort(c, p.Port.String())
				if n == 0 {
					t.Errorf("NetworkPolicy %s rule %d: port %s is no container port", np.Name, i, p.Port.String())
					continue
				}
				k := portKey(n, string(ptrOr(p.Protocol, corev1.ProtocolTCP)))
				from[k] = append(from[k], r.From)
			}
		}
	}
	open := slices.Sorted(func(yield func(string) bool) {
		for k := range from {
			if !yield(k) {
				return
			}
		}
	})
	if want := nodePorts(); !slices.Equal(open, want) {
		t.Errorf("NetworkPolicy opens %v, want exactly the ports the server binds %v", open, want)
	}
	anyone := func(k string) bool {
		return slices.ContainsFunc(from[k], func(f []networkingv1.NetworkPolicyPeer) bool { return len(f) == 0 })
	}
	if k := portKey(mainPort, "TCP"); !anyone(k) {
		t.Errorf("%s (clients) is not open to everyone", k)
	}
	if k := portKey(metricsPort, "TCP"); anyone(k) {
		t.Errorf("%s (metrics, and the cluster detail with CLUSTER_KEY) is open to everyone; allow the monitoring namespace", k)
	} else {
		for _, f := range from[k] {
			for _, peer := range f {
				if peer.NamespaceSelector == nil || len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 {
					t.Errorf("%s: want peers by a namespace selector (the monitoring namespace), got %+v", k, peer)
				}
			}
		}
	}
	for _, k := range clusterPorts() {
		for _, f := range from[k] {
			if len(f) == 0 {
				t.Errorf("%s (a cluster port) is open to everyone", k)
			}
			for _, peer := range f {
				sel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
				if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil || err != nil ||
					!sel.Matches(podLabels) || sel.Matches(labels.Set{}) {
					t.Errorf("%s (a cluster port): peer %+v is not the soketi pods of this namespace", k, peer)
				}
			}
		}
	}
}

// TestKustomizeBuild renders the folder with kubectl's built-in kustomize
// and decodes the result as strictly as the sources.
func TestKustomizeBuild(t *testing.T) {
	kubectl := needTool(t, "kubectl", "kubectl's release binary")
	out, err := exec.Command(kubectl, "kustomize", repo("deploy", "kubernetes")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, out)
	}
	m := &manifests{}
	if err := m.decodeStream("kubectl kustomize output", bytes.NewReader(out)); err != nil {
		t.Fatal(err)
	}
	if m.kustomization != nil || len(m.statefulSets) != 1 {
		t.Fatalf("rendered %d StatefulSets and a Kustomization: %v", len(m.statefulSets), m.kustomization != nil)
	}
	if img := m.statefulSets[0].Spec.Template.Spec.Containers[0].Image; img == "" {
		t.Error("rendered container has no image")
	}
}

// containerEnv resolves the container's environment: envFrom ConfigMaps and
// Secrets of this folder (which must exist), then env values.
func containerEnv(t *testing.T, m *manifests, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := find(m.configMaps, func(x *corev1.ConfigMap) bool { return x.Name == ef.ConfigMapRef.Name })
			if cm == nil {
				t.Fatalf("envFrom ConfigMap %q is not defined", ef.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			s := find(m.secrets, func(x *corev1.Secret) bool { return x.Name == ef.SecretRef.Name })
			if s == nil {
				t.Fatalf("envFrom Secret %q is not defined", ef.SecretRef.Name)
			}
			for k, v := range s.Data {
				env[ef.Prefix+k] = string(v)
			}
			for k, v := range s.StringData {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s := find(m.secrets, func(x *corev1.Secret) bool { return x.Name == ref.Name })
			v, ok := secretValue(s, "", ref.Key)
			if !ok {
				t.Fatalf("env %s: Secret %q key %q is not defined in this folder", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm := find(m.configMaps, func(x *corev1.ConfigMap) bool { return x.Name == ref.Name })
			if cm == nil || cm.Data[ref.Key] == "" {
				t.Fatalf("env %s: ConfigMap %q key %q is not defined in this folder", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = cm.Data[ref.Key]
		default: // fieldRef: checked by name
			env[e.Name] = ""
		}
	}
	return env
}

// secretValue reads prefix+key... from a Secret's data or stringData.
func secretValue(s *corev1.Secret, prefix, name string) (string, bool) {
	if s == nil {
		return "", false
	}
	for k, v := range s.StringData {
		if prefix+k == name {
			return v, true
		}
	}
	for k, v := range s.Data {
		if prefix+k == name {
			return string(v), true
		}
	}
	return "", false
}

func find[T any](xs []T, pred func(T) bool) T {
	for _, x := range xs {
		if pred(x) {
			return x
		}
	}
	var zero T
	return zero
}

func fieldRef(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

func checkProbe(t *testing.T, what string, c corev1.Container, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe", what)
		return
	}
	if p.HTTPGet.Path != path || resolvePort(c, p.HTTPGet.Port.String()) != mainPort {
		t.Errorf("%s: GET %s on port %s, want %s on %d", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path, mainPort)
	}
}

// resolvePort turns a port number or a container port name into a number.
func resolvePort(c corev1.Container, s string) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	for _, p := range c.Ports {
		if p.Name == s {
			return int(p.ContainerPort)
		}
	}
	return 0
}

func portKey(port int, proto string) string {
	if proto == "" {
		proto = "TCP"
	}
	return strconv.Itoa(port) + "/" + proto
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// TestStrictDecodeRejects guards the checker itself: a misspelt field or a
// duplicated key must fail, as the API server would (or silently drop it).
func TestStrictDecodeRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  clusterIp: None\n",
		"duplicate key": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: NodePort\n",
		"unknown kind":  "apiVersion: v1\nkind: Servic\nmetadata: {name: x}\n",
	} {
		m := &manifests{}
		if err := m.decodeStream(name, strings.NewReader(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
