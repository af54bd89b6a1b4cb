# pid 1 of a local-backend job sandbox. backend-local/src/sandbox.rs runs it inside
# bubblewrap, as root with only CAP_SETUID and CAP_SETGID, under a seccomp filter that
# refuses user namespaces and keyrings:
#
#   perl -e INIT -- UID GID
#
# fd 3 is the status pipe, fd 4 the job: NUL-separated records `dir=` (the working
# directory, entered as the job's user), `arg=...` (argv, in order),
# `env=KEY=VALUE` and `rlimit=RESOURCE:SOFT:HARD`, read before anything else happens. It
# forks the job's own process, which closes every other fd, drops to UID and GID for good
# (checked in /proc/self/status), sets the job's rlimits (after the switch: setresuid counts
# the new uid's processes against the limit in force) and execs the program with exactly the
# job's environment. pid 1 reaps every orphan; when the job's own process ends it writes that
# process's raw wait status to fd 3 and exits, and the kernel kills whatever is left in the
# namespace: nothing a descendant does or holds open decides the verdict.
#
# The job's environment comes on fd 4, not in this process's environment or arguments: the
# host's other users can read every process's command line, and PERL5OPT and friends in this
# process's environment would run code as root here. Only perl-base and `strict`: it starts
# once per job.
#
# Entering a session's sandbox (backend-local/src/session.rs), it is not pid 1 but a process
# `nsenter` started inside the held sandbox's namespaces, as root with every capability and
# outside bubblewrap's seccomp filter:
#
#   perl -e INIT -- UID GID enter
#
# fd 3 holds the job's files (`PATH\0MODE\0LENGTH\0` then LENGTH bytes, each in turn), fd 4 the
# job as above, fd 5 the seccomp filter (the one bubblewrap loads). It does what the job's own
# process does below, writes the files as the job's user (so nothing the session's jobs left in
# the directory can redirect a write as root), loads the filter last, and execs the program in
# place: the job's exit status is this process's.

use strict;

my ($STATUS_FD, $JOB_FD) = (3, 4);
my ($EINTR, $ENOENT) = (4, 2);

sub fail {
    my ($message) = @_;
    print STDERR "openshell: sandbox: $message\n";
    exit 1;
}

my $entering = @ARGV == 3 && $ARGV[2] eq 'enter';
pop @ARGV if $entering;
@ARGV == 2 && !grep { !/^\d+$/ } @ARGV or fail('usage: perl -e INIT -- UID GID [enter]');
my ($uid, $gid) = @ARGV;
enter() if $entering;
$$ == 1 or fail('the sandbox init runs only as pid 1 of its own pid namespace');
my $job = read_job();
open(my $status, '>&=', $STATUS_FD) or fail("cannot open the status pipe: $!");
my $pid = fork() // fail("fork failed: $!");
run_job($job) if $pid == 0;
while (1) {
    my $reaped = waitpid(-1, 0);
    if ($reaped == -1) {
        next if $! == $EINTR;
        fail("waiting for the job failed: $!");
    }
    next if $reaped != $pid;
    syswrite($status, "$?\n");
    # pid 1 exits: the kernel kills everything left in the namespace.
    exit 0;
}

sub read_job {
    open(my $in, '<&=', $JOB_FD) or fail("cannot open the job: $!");
    my $text = do { local $/; <$in> } // fail("cannot read the job: $!");
    close($in);
    my %job = (argv => [], env => {}, rlimits => [], dir => '/');
    for my $record (split /\0/, $text) {
        my ($key, $value) = $record =~ /^(\w+)=(.*)$/s or fail('bad job record');
        if ($key eq 'dir') {
            $job{dir} = $value;
        } elsif ($key eq 'arg') {
            push @{ $job{argv} }, $value;
        } elsif ($key eq 'env') {
            my ($name, $setting) = $value =~ /^([^=]+)=(.*)$/s or fail('bad environment record');
            $job{env}{$name} = $setting;
        } elsif ($key eq 'rlimit') {
            $value =~ /^\d+:\d+:\d+$/ or fail("bad rlimit `$value`");
            push @{ $job{rlimits} }, [split /:/, $value];
        } else {
            fail("unknown job record `$key`");
        }
    }
    @{ $job{argv} } or fail('the job has no program to run');
    return \%job;
}

# A job entering a session's sandbox: it becomes the job's own process (never returns).
sub enter {
    my ($FILES_FD, $FILTER_FD) = (3, 5);
    my $files = slurp($FILES_FD, 'the files');
    my $job = read_job();
    my $filter = slurp($FILTER_FD, 'the seccomp filter');
    length($filter) > 0 && length($filter) % 8 == 0 or fail('bad seccomp filter');
    run_job($job, $files, $filter);
}

sub slurp {
    my ($fd, $what) = @_;
    open(my $in, '<&=', $fd) or fail("cannot open $what: $!");
    binmode($in);
    my $bytes = do { local $/; <$in> } // fail("cannot read $what: $!");
    close($in);
    return $bytes;
}

# Writes the job's files into the working directory (the current one), as the job's user.
sub write_files {
    my ($files) = @_;
    require Fcntl;
    my $flags = Fcntl::O_WRONLY() | Fcntl::O_CREAT() | Fcntl::O_TRUNC() | Fcntl::O_NOFOLLOW();
    my $at = 0;
    while ($at < length($files)) {
        my ($path, $mode, $len) = substr($files, $at, 8192) =~ /^([^\0]+)\0(\d+)\0(\d+)\0/s
            or fail('bad file record');
        $at += length($path) + length($mode) + length($len) + 3;
        my @parents = split m{/}, $path;
        pop @parents;
        my $dir = '';
        for my $part (@parents) {
            $dir .= "$part/";
            mkdir($dir, 0755) or -d $dir or fail("cannot create directory $dir: $!");
        }
        sysopen(my $out, $path, $flags, 0600) or fail("cannot write $path: $!");
        binmode($out);
        my $content = substr($files, $at, $len);
        $at += $len;
        (syswrite($out, $content) // -1) == $len or fail("cannot write $path: $!");
        close($out);
        chmod($mode & 0777, $path) or fail("cannot set the mode of $path: $!");
    }
}

# Loads the seccomp filter (classic BPF, 8 bytes an instruction) on this process.
sub load_filter {
    my ($arch, $filter) = @_;
    my $program = pack('S x6 P', length($filter) / 8, $filter);
    my ($PR_SET_SECCOMP, $SECCOMP_MODE_FILTER) = (22, 2);
    syscall($arch->{prctl}, $PR_SET_SECCOMP, $SECCOMP_MODE_FILTER, $program, 0, 0) == 0
        or fail("loading the seccomp filter failed: $!");
}

# The job's own process: nothing of pid 1 is left to it when it execs the program. With
# `$files` and `$filter` (entering a session), it writes the files and loads the filter too.
sub run_job {
    my ($job, $files, $filter) = @_;
    opendir(my $fds, '/proc/self/fd') or fail("cannot list /proc/self/fd: $!");
    my @inherited = grep { /^\d+$/ && $_ > 2 } readdir($fds);
    closedir($fds);
    for my $fd (@inherited) {
        if (open(my $fh, '<&=', $fd)) { close($fh) }
    }
    my $arch = arch() or fail('unknown architecture (x86_64 and aarch64 only)');
    drop_privileges($arch);
    chdir($job->{dir}) or fail("cannot enter the working directory $job->{dir}: $!");
    write_files($files) if defined $files;
    for my $rlimit (@{ $job->{rlimits} }) {
        my ($resource, $soft, $hard) = @$rlimit;
        syscall($arch->{prlimit64}, 0, $resource + 0, pack('QQ', $soft, $hard), 0) == 0
            or fail("setting rlimit $resource to $soft:$hard failed: $!");
    }
    load_filter($arch, $filter) if defined $filter;
    %ENV = %{ $job->{env} };
    my @argv = @{ $job->{argv} };
    my $program = $argv[0];
    { no warnings 'exec'; exec { $program } @argv; }
    if ($! == $ENOENT) {
        my $where = $program =~ m{/} ? '' : ' on PATH';
        print STDERR "openshell: program `$program` not found$where\n";
        exit 127;
    }
    print STDERR "openshell: program `$program` cannot be executed: $!\n";
    exit 126;
}

# Syscall numbers of this host's architecture (e_machine of this perl binary).
sub arch {
    open(my $exe, '<', '/proc/self/exe') or return undef;
    sysread($exe, my $elf, 20) == 20 or return undef;
    my $machine = unpack('S', substr($elf, 18, 2));
    my %arches = (
        62  => { setresuid => 117, setresgid => 119, capset => 126, prlimit64 => 302, prctl => 157 },
        183 => { setresuid => 147, setresgid => 149, capset => 91,  prlimit64 => 261, prctl => 167 },
    );
    return $arches{$machine};
}

# setgroups([gid]) through $), then setresgid and setresuid, which also set the saved ids,
# then capset to clear the inheritable capabilities bubblewrap left; then checks it all took.
sub drop_privileges {
    my ($arch) = @_;
    $) = "$gid $gid";
    syscall($arch->{setresgid}, $gid + 0, $gid + 0, $gid + 0) == 0 or fail("setresgid($gid) failed: $!");
    syscall($arch->{setresuid}, $uid + 0, $uid + 0, $uid + 0) == 0 or fail("setresuid($uid) failed: $!");
    my ($header, $data) = (pack('Li', 0x20080522, 0), pack('L6', (0) x 6));
    syscall($arch->{capset}, $header, $data) == 0 or fail("clearing capabilities failed: $!");
    open(my $in, '<', '/proc/self/status') or fail("cannot read /proc/self/status: $!");
    my %field = do { local $/; <$in> } =~ /^(\w+):\s*(.*?)\s*$/mg;
    my $dropped = $field{Uid} eq join("\t", ($uid) x 4) && $field{Gid} eq join("\t", ($gid) x 4)
        && ($field{Groups} eq $gid || $field{Groups} eq '')
        && (grep { $field{$_} =~ /^0+$/ } qw(CapInh CapPrm CapEff CapAmb)) == 4
        && $field{NoNewPrivs} eq '1';
    $dropped or fail("dropping to uid $uid did not take (Uid $field{Uid}, Gid $field{Gid}, CapPrm $field{CapPrm})");
}
