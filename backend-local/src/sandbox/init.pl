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

use strict;

my ($STATUS_FD, $JOB_FD) = (3, 4);
my ($EINTR, $ENOENT) = (4, 2);

sub fail {
    my ($message) = @_;
    print STDERR "openshell: sandbox: $message\n";
    exit 1;
}

@ARGV == 2 && !grep { !/^\d+$/ } @ARGV or fail('usage: perl -e INIT -- UID GID');
my ($uid, $gid) = @ARGV;
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

# The job's own process: nothing of pid 1 is left to it when it execs the program.
sub run_job {
    my ($job) = @_;
    opendir(my $fds, '/proc/self/fd') or fail("cannot list /proc/self/fd: $!");
    my @inherited = grep { /^\d+$/ && $_ > 2 } readdir($fds);
    closedir($fds);
    for my $fd (@inherited) {
        if (open(my $fh, '<&=', $fd)) { close($fh) }
    }
    my $arch = arch() or fail('unknown architecture (x86_64 and aarch64 only)');
    drop_privileges($arch);
    chdir($job->{dir}) or fail("cannot enter the working directory $job->{dir}: $!");
    for my $rlimit (@{ $job->{rlimits} }) {
        my ($resource, $soft, $hard) = @$rlimit;
        syscall($arch->{prlimit64}, 0, $resource + 0, pack('QQ', $soft, $hard), 0) == 0
            or fail("setting rlimit $resource to $soft:$hard failed: $!");
    }
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
        62  => { setresuid => 117, setresgid => 119, capset => 126, prlimit64 => 302 },
        183 => { setresuid => 147, setresgid => 149, capset => 91,  prlimit64 => 261 },
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
