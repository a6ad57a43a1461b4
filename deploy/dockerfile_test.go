package deploy

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// repoRoot is the repository root, relative to this package's directory.
const repoRoot = ".."

// stage is one FROM section of a Dockerfile, with what the tests check.
type stage struct {
	name, from string
	env        map[string]string // ENV, inherited from a parent stage
	workdir    string
	runs       []run
	copies     []dcopy
	user       string
	expose     []string
	entrypoint []string
	cmd        []string
}

// run is an exec-form RUN instruction and the WORKDIR it runs in.
type run struct {
	dir  string
	argv []string
}

// dcopy is a COPY instruction.
type dcopy struct {
	from     string // --from stage, or "" for the build context
	src, dst string // src: the sources, space-separated
}

// parseDockerfile reads the subset of the Dockerfile syntax the repository's
// Dockerfile uses and fails on anything else, so that the test never checks
// a different file than Docker builds: ARG, FROM … AS, ENV K=V…, WORKDIR,
// COPY [--from=S] SRC… DST, exec-form RUN, USER, EXPOSE, ENTRYPOINT and CMD.
func parseDockerfile(text string) ([]*stage, error) {
	args := map[string]string{} // global ARGs, for FROM
	var stages []*stage
	var cur *stage
	var logical []string
	var b strings.Builder
	for line := range strings.Lines(text) {
		line = strings.TrimRight(line, "\r\n")
		trimmed := strings.TrimSpace(line)
		if b.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			b.WriteString(s + " ")
			continue
		}
		b.WriteString(trimmed)
		logical = append(logical, b.String())
		b.Reset()
	}
	if b.Len() > 0 {
		return nil, fmt.Errorf("line continuation at the end of the file")
	}
	expand := func(s string, vars map[string]string) (string, error) {
		var err error
		out := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(s, func(m string) string {
			v, ok := vars[m[2:len(m)-1]]
			if !ok {
				err = fmt.Errorf("%s: no such ARG", m)
			}
			return v
		})
		return out, err
	}
	execForm := func(instr, rest string) ([]string, error) {
		var argv []string
		if err := json.Unmarshal([]byte(rest), &argv); err != nil || len(argv) == 0 {
			return nil, fmt.Errorf("%s %s: want the exec form [\"cmd\", \"arg\", ...]", instr, rest)
		}
		return argv, nil
	}
	for _, l := range logical {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		instr = strings.ToUpper(instr)
		if cur == nil && instr != "ARG" && instr != "FROM" {
			return nil, fmt.Errorf("%s before the first FROM", instr)
		}
		switch instr {
		case "ARG":
			k, v, _ := strings.Cut(rest, "=")
			if cur == nil {
				args[k] = v
			} else {
				cur.env["${"+k+"}"] = v // a build argument: its default, for the report only
			}
		case "FROM":
			f := strings.Fields(rest)
			if len(f) != 3 || !strings.EqualFold(f[1], "AS") {
				return nil, fmt.Errorf("FROM %s: want FROM IMAGE AS NAME", rest)
			}
			from, err := expand(f[0], args)
			if err != nil {
				return nil, fmt.Errorf("FROM %s: %w", rest, err)
			}
			s := &stage{name: f[2], from: from, env: map[string]string{}, workdir: "/"}
			for _, p := range stages {
				if p.name == from { // FROM an earlier stage inherits its state
					s.env, s.workdir, s.user = maps.Clone(p.env), p.workdir, p.user
					s.entrypoint, s.cmd = p.entrypoint, p.cmd
				}
			}
			stages = append(stages, s)
			cur = s
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || strings.ContainsAny(v, `"'`) {
					return nil, fmt.Errorf("ENV %s: want unquoted K=V pairs", rest)
				}
				cur.env[k] = v
			}
		case "WORKDIR":
			cur.workdir = resolve(cur.workdir, rest)
		case "COPY":
			f := strings.Fields(rest)
			var c dcopy
			if from, ok := strings.CutPrefix(f[0], "--from="); ok {
				c.from, f = from, f[1:]
			}
			if len(f) < 2 {
				return nil, fmt.Errorf("COPY %s: want sources and a destination", rest)
			}
			c.src, c.dst = strings.Join(f[:len(f)-1], " "), resolve(cur.workdir, f[len(f)-1])
			cur.copies = append(cur.copies, c)
		case "RUN":
			argv, err := execForm(instr, rest)
			if err != nil {
				return nil, err
			}
			cur.runs = append(cur.runs, run{dir: cur.workdir, argv: argv})
		case "USER":
			cur.user = rest
		case "EXPOSE":
			cur.expose = strings.Fields(rest)
		case "ENTRYPOINT", "CMD":
			argv, err := execForm(instr, rest)
			if err != nil {
				return nil, err
			}
			if instr == "CMD" {
				cur.cmd = argv
			} else {
				cur.entrypoint = argv
			}
		default:
			return nil, fmt.Errorf("instruction %s: not understood by this test; teach parseDockerfile", instr)
		}
	}
	return stages, nil
}

// resolve resolves p against the directory dir, as WORKDIR and COPY do.
func resolve(dir, p string) string {
	if strings.HasSuffix(p, "/") && p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	if strings.HasPrefix(p, "/") {
		return p
	}
	return filepath.Join(dir, p)
}

func findStage(t *testing.T, stages []*stage, name string) *stage {
	t.Helper()
	for _, s := range stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return nil
}

func TestParseDockerfileRejects(t *testing.T) {
	for name, text := range map[string]string{
		"shell-form RUN":      "FROM a AS b\nRUN go build ./...\n",
		"unknown instruction": "FROM a AS b\nHEALTHCHECK CMD true\n",
		"FROM without AS":     "FROM a\n",
		"unknown ARG":         "FROM ${NOPE} AS b\n",
		"quoted ENV":          "FROM a AS b\nENV A=\"b c\"\n",
		"COPY of one":         "FROM a AS b\nCOPY x\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseDockerfile(text); err == nil {
				t.Errorf("parseDockerfile accepted:\n%s", text)
			}
		})
	}
}

// dockerStages parses the repository's Dockerfile and returns its stages
// by name.
func dockerStages(t *testing.T) (all []*stage, build, plugins, server, basic *stage) {
	t.Helper()
	stages, err := parseDockerfile(string(readFile(t, "Dockerfile")))
	if err != nil {
		t.Fatal(err)
	}
	return stages, findStage(t, stages, "build"), findStage(t, stages, "plugins"),
		findStage(t, stages, "wasm-callout"), findStage(t, stages, "basic")
}

// copyFrom returns the COPY --from=from instruction of s.
func copyFrom(t *testing.T, s *stage, from string) dcopy {
	t.Helper()
	for _, c := range s.copies {
		if c.from == from {
			return c
		}
	}
	t.Fatalf("%s stage: no COPY --from=%s", s.name, from)
	return dcopy{}
}

// TestDockerfileStages checks what the images promise without building
// them: a static, trimmed, stripped build; final stages on distroless (or
// scratch) as a numeric non-root user, with the binary as entrypoint, the
// binary's default ports exposed, and the basic stage serving the plugin
// it copies.
func TestDockerfileStages(t *testing.T) {
	stages, build, _, server, basic := dockerStages(t)
	if last := stages[len(stages)-1]; last != basic {
		t.Errorf("the default (last) stage is %q, want basic so that docker build . && docker run serves a plugin", last.name)
	}
	if got := build.env["CGO_ENABLED"]; got != "0" {
		t.Errorf("build stage: CGO_ENABLED=%q, want 0 (static binary for a libc-less base)", got)
	}
	if !slices.Contains(build.copies, dcopy{src: ".", dst: "/src"}) {
		t.Errorf("build stage: want COPY . . into WORKDIR /src, got %+v", build.copies)
	}
	var goBuild []string
	for _, r := range build.runs {
		if len(r.argv) > 2 && r.argv[0] == "go" && r.argv[1] == "build" {
			goBuild = r.argv
		}
	}
	for _, want := range []string{"-trimpath", "-ldflags=-s -w", "./cmd/wasm-callout"} {
		if !slices.Contains(goBuild, want) {
			t.Errorf("build stage: go build %q lacks %q", goBuild, want)
		}
	}
	if bin := copyFrom(t, server, "build"); !slices.Contains(goBuild, bin.src) || !slices.Equal(server.entrypoint, []string{bin.dst}) {
		t.Errorf("server stage: ENTRYPOINT %q, want [%q], the binary go build %q writes", server.entrypoint, bin.dst, goBuild)
	}
	for _, s := range []*stage{server, basic} {
		if s.from != "gcr.io/distroless/static-debian12:nonroot" && s.from != "scratch" && s.from != server.name {
			t.Errorf("%s stage: FROM %s, want distroless static nonroot or scratch", s.name, s.from)
		}
		if !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(s.user) {
			t.Errorf("%s stage: USER %q, want a numeric non-root user (runAsNonRoot checks numbers)", s.name, s.user)
		}
	}
	if want := defaultPorts(t, wasmCalloutBinary(t)); !slices.Equal(sortedCopy(server.expose), want) {
		t.Errorf("server stage: EXPOSE %q, want the default ports of --addr, --tls-addr, --health-addr %q", server.expose, want)
	}
	plugin := copyFrom(t, basic, "plugins").dst
	if v, _ := flagValueSpaced(basic.cmd, "plugin"); v != plugin {
		t.Errorf("basic stage: CMD %q does not serve %q (copied from the plugins stage)", basic.cmd, plugin)
	}
	checkFlags(t, basic.cmd)
}

// flagValueSpaced returns the value of "--name VALUE" in args.
func flagValueSpaced(args []string, name string) (string, bool) {
	if i := slices.Index(args, "--"+name); i >= 0 && i+1 < len(args) {
		return args[i+1], true
	}
	return "", false
}

// TestDockerfileBuild runs the Dockerfile's build and plugins stages outside
// Docker, as written: the same RUN command lines with the same ENV, with
// /src mapped to the repository (COPY . .) and /out to a temporary
// directory. It then checks that the binary is static and stripped and
// that the basic image's command, run with that binary and plugin, serves.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary with the Dockerfile's flags (-trimpath compiles every package once)")
	}
	_, build, plugins, server, basic := dockerStages(t)
	out := t.TempDir()
	mapPath := func(p string) string {
		if rest, ok := strings.CutPrefix(p, "/out/"); ok {
			return filepath.Join(out, rest)
		}
		if rest, ok := strings.CutPrefix(p, "/src"); ok && (rest == "" || rest[0] == '/') {
			return filepath.Join(repoRoot, rest)
		}
		return p
	}
	for _, s := range []*stage{build, plugins} {
		for _, r := range s.runs {
			argv := make([]string, len(r.argv))
			for i, a := range r.argv {
				argv[i] = mapPath(a)
			}
			if !strings.HasPrefix(r.dir, "/src") {
				t.Fatalf("%s stage: RUN %q in %s, outside /src (the build context)", s.name, r.argv, r.dir)
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = mapPath(r.dir)
			cmd.Env = os.Environ()
			for k, v := range s.env {
				if !strings.HasPrefix(k, "${") && !strings.Contains(v, "${") {
					// Build arguments (GOPROXY) keep this machine's values.
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s stage: RUN %q: %v\n%s", s.name, r.argv, err, b)
			}
			t.Logf("%s stage: RUN %q: %v", s.name, r.argv, time.Since(start).Round(time.Millisecond))
		}
	}
	binary := mapPath(copyFrom(t, server, "build").src)
	checkStatic(t, binary)
	plugin := copyFrom(t, basic, "plugins")
	checkWasm(t, mapPath(plugin.src))
	args := slices.Clone(basic.cmd)
	for i, a := range args {
		if a == plugin.dst {
			args[i] = mapPath(plugin.src)
		}
	}
	serveOnce(t, binary, args, t.TempDir())
}

// checkStatic fails unless the ELF file at name has neither an interpreter
// nor a dynamic section: it runs on a base without libc or a loader.
func checkStatic(t *testing.T, name string) {
	t.Helper()
	f, err := elf.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: has a %v program header: not a static binary", name, p.Type)
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Errorf("%s: has a .dynamic section: not a static binary", name)
	}
	if s := f.Section(".symtab"); s != nil {
		t.Errorf("%s: has a symbol table: -ldflags=-s did not apply", name)
	}
}

// checkWasm fails unless name is a WebAssembly binary.
func checkWasm(t *testing.T, name string) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x00asm\x01\x00\x00\x00")) {
		t.Errorf("%s: not a WebAssembly 1.0 binary", name)
	}
}

// defaultPorts asks the binary for its usage and returns the ports its
// --addr, --tls-addr and --health-addr flags default to, sorted.
func defaultPorts(t *testing.T, binary string) []string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(binary, "-h")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s -h: %v\n%s", binary, err, stderr.Bytes())
	}
	var ports []string
	for _, flag := range []string{"addr", "tls-addr", "health-addr"} {
		m := regexp.MustCompile(`(?m)^\s+-` + flag + ` string\n(?:.*\n)*?.*\(default ":(\d+)"\)`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("%s -h: no default port for --%s in:\n%s", binary, flag, stderr.Bytes())
		}
		ports = append(ports, m[1])
	}
	return sortedCopy(ports)
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// serveOnce runs binary with args (the image's command) on loopback ports,
// with home as its home directory (the default compilation cache goes
// there, as in the image), waits until it serves gRPC and stops it.
func serveOnce(t *testing.T, binary string, args []string, home string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append(args, "--addr=127.0.0.1:0", "--health-addr=127.0.0.1:0")
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	served := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "wasm-callout: listening grpc ") {
			served = true
			break
		}
	}
	cmd.Process.Signal(os.Interrupt)
	go func() {
		for sc.Scan() { // drain, so the process never blocks on stdout
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Errorf("%s %q: %v\n%s", binary, args, err, stderr.Bytes())
	}
	if !served {
		t.Fatalf("%s %q never served gRPC:\n%s", binary, args, stderr.Bytes())
	}
	if _, err := os.Stat(filepath.Join(home, ".cache", "wasm-callout")); err != nil {
		t.Errorf("no compilation cache under the image user's home: %v", err)
	}
}
